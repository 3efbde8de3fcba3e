// Decode steps with RoPE and the KV write inside decode attention (KILN_FUSED_ROPE) against the
// same model with the RoPE kernel (KILN_FUSED_ROPE=0): a 300-token prompt, then 6 decode steps of
// batch 1 and 3 (split-K attention, graphs), logits equal bit for bit, for a bf16 cache and fp8
// caches with and without the key rotation (mode 2: fp8 caches fused too). The switch is read when
// the model is created. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/models/model.h"
#include "tests/models/golden_cuda_model.h"
#ifdef KILN_WITH_CUDA
#include "kiln/models/llama_cuda_model.h"
#endif

namespace kiln {
namespace {

// Logits of every step: prompts of 300 tokens for `seqs` sequences (blocks 20 s ..), then 6
// decode steps of one token each. fused_layers: the layers the model ran fused.
Result<std::vector<float>> run_steps(const char* fused, bool fp8_kv, bool rotate_keys, int seqs, int64_t& fused_layers) {
  ::setenv("KILN_FUSED_ROPE", fused, 1);
  Result<std::unique_ptr<Model>> model = random_cuda_llama_d128(fp8_kv, rotate_keys);
  ::unsetenv("KILN_FUSED_ROPE");
  KILN_RETURN_IF_ERROR(model.status());
  Model& m = **model;
  KILN_ASSIGN_OR_RETURN(KvCacheView kv, m.allocate_kv_cache(64, 16));
  const int64_t vocab = m.config().vocab_size;
  std::vector<float> all;
  for (int step = 0; step < 7; ++step) {
    ForwardBatch b;
    b.cu_seqlens_q.push_back(0);
    b.max_blocks_per_seq = 20;
    for (int s = 0; s < seqs; ++s) {
      const int q_len = step == 0 ? 300 : 1, first = step == 0 ? 0 : 299 + step;
      for (int i = 0; i < q_len; ++i) {
        const int pos = first + i;
        b.token_ids.push_back((7 * pos + 31 * s + 5) % 512);
        b.positions.push_back(pos);
        b.slot_mapping.push_back(16 * (20 * s + pos / 16) + pos % 16);
      }
      b.cu_seqlens_q.push_back(b.cu_seqlens_q.back() + q_len);
      b.kv_lens.push_back(first + q_len);
      for (int j = 0; j < 20; ++j) b.block_tables.push_back(20 * s + j);
      b.logits_rows.push_back(b.cu_seqlens_q.back() - 1);
    }
    HostTensor logits = HostTensor::zeros(DType::kF32, {seqs, vocab});
    KILN_RETURN_IF_ERROR(m.forward(b, kv, logits.tensor));
    all.insert(all.end(), logits.tensor.ptr<float>(), logits.tensor.ptr<float>() + seqs * vocab);
  }
  fused_layers = -1;
#ifdef KILN_WITH_CUDA
  if (auto* cm = dynamic_cast<cuda_llama::CudaLlamaModel*>(&m)) fused_layers = cm->fused_rope_layers();
#endif
  return all;
}

struct FusedCase {
  bool fp8_kv, rotate_keys;
};

class CudaFusedRope : public ::testing::TestWithParam<FusedCase> {};

TEST_P(CudaFusedRope, DecodeLogitsMatchTheRopeKernel) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const FusedCase c = GetParam();
  for (int seqs : {1, 3}) {
    int64_t base_layers = 0, fused_layers = 0;
    Result<std::vector<float>> base = run_steps("0", c.fp8_kv, c.rotate_keys, seqs, base_layers);
    Result<std::vector<float>> fused = run_steps("2", c.fp8_kv, c.rotate_keys, seqs, fused_layers);
    ASSERT_TRUE(base.ok()) << base.status().to_string();
    ASSERT_TRUE(fused.ok()) << fused.status().to_string();
    EXPECT_EQ(base_layers, 0);
    EXPECT_GT(fused_layers, 0) << "no layer ran fused";  // launched or captured once per decode graph
    ASSERT_EQ(base->size(), fused->size());
    size_t differ = 0;
    for (size_t i = 0; i < base->size(); ++i) differ += std::memcmp(&(*base)[i], &(*fused)[i], sizeof(float)) != 0;
    EXPECT_EQ(differ, 0u) << seqs << " sequences: " << differ << " of " << base->size() << " logits differ";
    bool finite = true;
    for (float x : *fused) finite &= std::isfinite(x);
    EXPECT_TRUE(finite);
  }
}

INSTANTIATE_TEST_SUITE_P(Caches, CudaFusedRope,
                         ::testing::Values(FusedCase{false, true}, FusedCase{true, true}, FusedCase{true, false}),
                         [](const ::testing::TestParamInfo<FusedCase>& i) {
                           return std::string(i.param.fp8_kv ? (i.param.rotate_keys ? "fp8" : "fp8_norot") : "bf16");
                         });

}  // namespace
}  // namespace kiln
