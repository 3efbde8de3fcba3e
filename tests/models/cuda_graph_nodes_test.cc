// A decode graph is one chain of kernels launched with programmatic dependent launch: a copy, memset
// or allocation node between two of them cuts the chain (the next kernel can no longer start while
// the one before finishes). Until 9dcf324 every layer's split-K decode attention added an
// allocation, a memset and a free node, and the LM head a copy per row. Skipped without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "kiln/models/model.h"
#include "tests/models/golden_cuda_model.h"
#ifdef KILN_WITH_CUDA
#include "kiln/models/llama_cuda_model.h"
#endif

namespace kiln {
namespace {

// The golden models (head_dim 16: the portable attention kernel), and "d128" (the tuned decode
// kernel with split K).
Result<std::unique_ptr<Model>> graph_test_model(const std::string& name) {
  return name == "d128" ? random_cuda_llama_d128() : golden_cuda_model(name.c_str());
}

class CudaGraphNodes : public ::testing::TestWithParam<const char*> {};

// Batch-1 decode over a 300-token context (split-K attention where head_dim 128) and batch 3:
// only kernel nodes.
TEST_P(CudaGraphNodes, DecodeGraphsHoldOnlyKernels) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
#ifdef KILN_WITH_CUDA
  auto model = graph_test_model(GetParam());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto* m = dynamic_cast<cuda_llama::CudaLlamaModel*>(model->get());
  ASSERT_NE(m, nullptr);
  auto kv = m->allocate_kv_cache(64, 16);
  ASSERT_TRUE(kv.ok());
  for (int seqs : {1, 3}) {
    ForwardBatch b;  // sequence s: one token at position 299 of blocks 20 s .. 20 s + 18
    b.cu_seqlens_q.push_back(0);
    b.max_blocks_per_seq = 19;
    for (int s = 0; s < seqs; ++s) {
      b.token_ids.push_back(11 * s + 3);
      b.positions.push_back(299);
      b.slot_mapping.push_back(16 * (20 * s + 18) + 299 % 16);
      b.cu_seqlens_q.push_back(s + 1);
      b.kv_lens.push_back(300);
      for (int j = 0; j < 19; ++j) b.block_tables.push_back(20 * s + j);
      b.logits_rows.push_back(s);
    }
    HostTensor logits = HostTensor::zeros(DType::kF32, {seqs, m->config().vocab_size});
    const int64_t captures = m->graph_captures();
    const Status st = m->forward(b, *kv, logits.tensor);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(m->graph_captures(), captures + 1) << seqs << " sequences: no decode graph was captured";
    EXPECT_EQ(m->last_graph_other_nodes(), 0) << seqs << " sequences";
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGraphNodes, ::testing::Values("llama3", "mixtral", "d128"));

}  // namespace
}  // namespace kiln
