// Host side of the CUDA paged attention family (no CUDA includes): the params struct every kernel
// takes __grid_constant__, the variant tables that dispatch and the tests share, and the checks
// that turn PagedAttentionArgs into params.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "kiln/kernels/attention.h"

namespace kiln::cuda {

// Everything a paged attention kernel reads, as raw pointers and int sizes.
struct PagedAttentionParams {
  const void* q;                // [num_tokens, num_q_heads, head_dim] bf16
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, head_dim] bf16 or fp8 e4m3
  const void* v_cache;          // [num_blocks, block_size, num_kv_heads, head_dim] same dtype
  const int32_t* cu_seqlens_q;  // [batch + 1]
  const int32_t* kv_lens;       // [batch]
  const int32_t* block_tables;  // [batch, table_stride]
  void* out;                    // [num_tokens, num_q_heads, head_dim] bf16
  float* partial_o;             // [num_splits, batch, num_q_heads, head_dim] f32 (decode split-K)
  float* partial_lse;           // [num_splits, batch, num_q_heads] f32, log2 of the softmax sum
  int* split_counters;          // [batch, num_kv_heads] splits done; zero before a launch, zero after
  int num_tokens, batch, num_q_heads, num_kv_heads, group, head_dim;
  int block_size_log2;  // block_size == 1 << block_size_log2
  int table_stride;     // elements between block table rows (>= max_blocks_per_seq)
  int max_kv_len;       // host-side bound: max_blocks_per_seq * block_size
  float scale;          // softmax scale (> 0), usually 1/sqrt(head_dim)
  int sliding_window;   // 0 = unlimited
  int num_splits;       // decode: KV splits per sequence (1 = no split-K)
  int split_len;        // decode: keys per split, a multiple of the decode KV tile
  // fp8 caches: real K = float(k_cache) * k_scale, V likewise; 1 for bf16 caches.
  float k_scale, v_scale;
  int64_t q_stride;  // elements between q's token rows (num_q_heads * head_dim when dense)
  // Decode with RoPE and the KV write fused in (decode_attention_rope_cuda; the decode kernels):
  // q holds the unrotated q rows; every CTA rotates its group's heads into its Q tile, and
  // the split holding the newest key (kv_len - 1) rotates that key (k_new's head), writes it and
  // v_new's head into the cache at slots[token] (when inside the cache) and uses them. rope = 0: q
  // is rotated already and the newest key is in the cache.
  int rope;
  const void* k_new;         // [batch, num_kv_heads, head_dim] bf16, token stride k_stride
  const void* v_new;         // [batch, num_kv_heads, head_dim] bf16, token stride v_stride
  int64_t k_stride, v_stride;
  const int32_t* positions;  // [batch]
  const float* inv_freq;     // [head_dim / 2]
  const int32_t* slots;      // [batch]: block * block_size + offset in the cache
  int64_t num_slots;         // cache slots (num_blocks * block_size)
  // fp8 caches: q and k heads also go through the Walsh-Hadamard rotation after RoPE
  // (RopeKvWriteArgs::hadamard_qk), hadamard_norm = 1 / sqrt(head_dim) as the CPU computes it.
  int rope_hadamard;
  float hadamard_norm;
  // Decode split-K with 2..kMaxClusterSplits splits: the splits of one (sequence, kv head) are a
  // thread-block cluster and combine their partials in distributed shared memory (no workspace;
  // decode_merge.cuh's finish_split_cluster). Set by plan_decode_splits.
  int cluster_merge;
};

// The portable fallback (generic_attention.cu): any head_dim <= 256, bf16 q with a bf16 or fp8
// e4m3 cache (`cache`), slow.
Status generic_attention_launch(const PagedAttentionParams& params, DType cache, CUstream_st* stream);

// One compiled kernel variant: a row of an explicit table, looked up at dispatch. `dtype` is the
// q / out dtype, `cache` the K/V cache's (last, so that 4-field rows still mean a bf16 cache).
struct AttentionVariant {
  DType dtype;
  int head_dim;
  Status (*launch)(const PagedAttentionParams& params, CUstream_st* stream);
  int (*ctas_per_sm)();  // occupancy of the main kernel, for split-K planning
  DType cache = DType::kBF16;
};

std::span<const AttentionVariant> decode_attention_variants();
// The fp8 e4m3 cache rows of the decode table (decode_attention_fp8.cu; head_dim 64 and 128).
template <int kHeadDim>
Status launch_decode_fp8(const PagedAttentionParams& params, CUstream_st* stream);
template <int kHeadDim>
int decode_fp8_ctas_per_sm();
// Alternative d128 fp8 decode configurations, for the benchmark to compare with the shipped one.
struct Fp8DecodeTuning {
  const char* name;
  Status (*launch)(const PagedAttentionParams& params, CUstream_st* stream);
  int (*ctas_per_sm)();
};
std::span<const Fp8DecodeTuning> decode_fp8_tunings();
std::span<const AttentionVariant> prefill_attention_variants();

// The row for (q dtype, cache dtype, head_dim), or an error listing what the table holds.
Result<const AttentionVariant*> find_attention_variant(std::span<const AttentionVariant> table, const char* family,
                                                       DType dtype, DType cache, int head_dim);
// The same with cache == dtype.
Result<const AttentionVariant*> find_attention_variant(std::span<const AttentionVariant> table, const char* family,
                                                       DType dtype, int head_dim);

// Checks dtypes (q/out bf16, caches bf16 or fp8 e4m3), devices and shapes; num_splits = 1.
Result<PagedAttentionParams> make_paged_attention_params(const PagedAttentionArgs& args);

// Decode split-K: sets num_splits / split_len (num_splits 0 = pick from the GPU's size), then the
// workspace the split needs (0 bytes for one split) and where its partials and counters go.
// Workspace: [counters: kDecodeCounterBytes | lse | partial O]. The counters sit at offset 0 whatever
// the shape and must be zero before the first launch on a workspace; every launch leaves them zero,
// so one workspace serves every decode shape whose bytes fit (a model's, across its decode graphs).
constexpr int kDecodeTileKeys = 64;    // keys per decode pipeline stage; split_len is a multiple
constexpr int kMaxDecodeSplits = 512;  // the combine keeps [splits, group] weights in shared memory
constexpr int kMaxDecodeCounters = 8192;  // split K needs batch * num_kv_heads <= this (else 1 split)
constexpr int64_t kDecodeCounterBytes = kMaxDecodeCounters * 4;
constexpr int kMaxClusterSplits = 8;  // the portable cluster size
// Decode with at least this many (sequence, kv head) pairs is "batched": plan_decode_splits's
// batched rule.
constexpr int64_t kDecodeBatchedCtas = 32;
Status plan_decode_splits(PagedAttentionParams& params, const AttentionVariant& variant, int num_splits);
int64_t decode_workspace_bytes(const PagedAttentionParams& params);
void bind_decode_workspace(PagedAttentionParams& params, void* workspace);

}  // namespace kiln::cuda
