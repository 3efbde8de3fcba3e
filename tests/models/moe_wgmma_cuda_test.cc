// The grouped MoE path with kiln's one-launch expert GEMM (moe_grouped_wgmma_cuda, sm_90) against
// the cuBLASLt lanes, end to end on the golden Mixtral: prompt chunks of 512 tokens (1024 slots: x
// is quantized once, so both multiply the same e4m3 rows). KILN_MOE_WGMMA 0 (lanes) against 1 (down)
// and 2 (gate_up and down). GPU only; skips without an sm_90 one.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/kernels/moe_cuda.h"
#include "kiln/models/model.h"
#include "tests/models/golden_cuda_model.h"

namespace kiln {
namespace {

// Both GEMMs sum the same fp8 products in f32 and scale them the same way; the order of the sums
// differs, so the bf16 outputs differ in the last bit now and then, and the SwiGLU's e4m3 rounding
// after gate_up can move a code one step, which this tiny random model amplifies (H100: max 3.96e-2
// of max |logit|, mean 5.8e-4, top-1 0.991 for both modes). A wrong row, expert or scale moves the
// logits of the tokens it touches by about their size: the mean error catches that. The kernel's arithmetic is held
// against a CPU reference in tests/kernels/moe_grouped_wgmma_cuda_test.cu.
TEST(CudaMoeWgmma, MatchesLanes) {
#ifdef KILN_WITH_CUDA
  if (!have_gpu() || !moe_grouped_wgmma_available()) GTEST_SKIP() << "no sm_90 GPU";
#else
  GTEST_SKIP() << "built without CUDA";
#endif
  auto ctx = golden_mixtral_ctx1024();
  ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
  auto run = mixtral_chunk512_logits(*ctx, "KILN_MOE_WGMMA", {"0", "1", "2", "2"}, 1);
  ASSERT_TRUE(run.ok()) << run.status().to_string();
  const std::vector<HostTensor>& logits = *run;
  const int64_t rows = logits[0].tensor.shape[0], vocab = logits[0].tensor.shape[1];
  for (size_t i : {size_t{1}, size_t{2}}) {
    const Agreement a = agree(logits[i].tensor.ptr<float>(), logits[0].tensor.ptr<float>(), rows, vocab);
    std::printf("moe wgmma (mode %zu) vs lanes: max |err| / max |logit| %.2e, mean %.2e, top-1 agreement %.3f\n", i,
                a.rel_err, a.mean_rel_err, a.top1);
    EXPECT_LE(a.rel_err, 1e-1);
    EXPECT_LE(a.mean_rel_err, 3e-3);
    EXPECT_GE(a.top1, 0.95);
  }
  EXPECT_EQ(std::memcmp(logits[2].tensor.data, logits[3].tensor.data, rows * vocab * 4), 0) << "not deterministic";
}

}  // namespace
}  // namespace kiln
