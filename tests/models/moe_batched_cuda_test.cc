// The grouped MoE path's batched fp8 experts (MoeBatchedGemm, the SwiGLU and un-permute dequant
// passes) against the per-expert cuBLASLt loop, end to end on the golden Mixtral: prompt chunks of
// 512 tokens (1024 slots: x is quantized before the offsets reach the host, so both paths multiply
// the same e4m3 rows). GPU only; skips without one.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/models/model.h"
#include "tests/models/golden_cuda_model.h"

namespace kiln {
namespace {

// KILN_MOE_BATCHED=force takes the batched path at any padding; =0 the loop. The two round gate_up
// differently: the loop's cuBLASLt rounds the scaled sums to bf16, the batched path the unscaled
// ones and then the SwiGLU the scaled values (two bf16 roundings, ~2^-8 apart). That moves ~6% of
// the SwiGLU's e4m3 codes (3 mantissa bits) one step, as quantizing x differently does in
// CudaMoeDecode.MatchesGroupedPath, and this tiny random model amplifies it the same way (H100:
// max 0.253 of max |logit|, mean 7.3e-3, top-1 0.924), so the same bounds hold here. A missing,
// misplaced or wrong expert's scale, or a wrong row (padding, offsets), moves every logit of the
// affected tokens by about its own size: the mean error catches it. The kernels' arithmetic is
// held exactly in tests/kernels/moe_batched_cuda_test.cu.
TEST(CudaMoeBatched, MatchesGroupedLoop) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto ctx = golden_mixtral_ctx1024();
  ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
  // the first call of a plan times its candidates; the second reuses it
  auto run = mixtral_chunk512_logits(*ctx, "KILN_MOE_BATCHED", {"0", "force"}, 2);
  ASSERT_TRUE(run.ok()) << run.status().to_string();
  const std::vector<HostTensor>& logits = *run;
  const int64_t rows = logits[0].tensor.shape[0], vocab = logits[0].tensor.shape[1];
  for (size_t i : {size_t{2}, size_t{3}}) {
    const Agreement a = agree(logits[i].tensor.ptr<float>(), logits[0].tensor.ptr<float>(), rows, vocab);
    std::printf("moe batched vs loop (pass %zu): max |err| / max |logit| %.2e, mean %.2e, top-1 agreement %.3f\n", i - 2,
                a.rel_err, a.mean_rel_err, a.top1);
    EXPECT_LE(a.rel_err, 3e-1);
    EXPECT_LE(a.mean_rel_err, 2e-2);
    EXPECT_GE(a.top1, 0.75);
  }
  // Both paths are deterministic: the batched one tunes its plans in pass 0 and runs the winner
  // in both passes.
  EXPECT_EQ(std::memcmp(logits[0].tensor.data, logits[1].tensor.data, rows * vocab * 4), 0);
  EXPECT_EQ(std::memcmp(logits[2].tensor.data, logits[3].tensor.data, rows * vocab * 4), 0);
}

}  // namespace
}  // namespace kiln
