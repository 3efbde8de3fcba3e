// Paged attention over a KV cache for a variable-length batch: each sequence b has q_len(b) new
// query tokens (rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]) and kv_lens[b] cached tokens (the new
// ones included, already written). Causal: new token i of b sits at position
// kv_lens[b] - q_len(b) + i and sees keys [0, that position] (and, with a sliding window w, only
// the last w of them). Grouped-query: query head h reads kv head h / (num_q_heads / num_kv_heads).
// One entry point covers prefill (q_len > 1) and decode (q_len == 1).
#pragma once
#include <functional>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct PagedAttentionArgs {
  Tensor q;             // [num_tokens, num_q_heads, head_dim] f32
  Tensor k_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] f32 or fp8 e4m3
  Tensor v_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] same dtype as k_cache
  Tensor cu_seqlens_q;  // [batch + 1] int32
  Tensor kv_lens;       // [batch] int32
  Tensor block_tables;  // [batch, max_blocks_per_seq] int32
  Tensor out;           // [num_tokens, num_q_heads, head_dim] f32
  float scale = 1.0f;   // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;  // 0 = unlimited
  // fp8 (e4m3) caches: real K = float(k_cache) * k_scale, V likewise (see RopeKvWriteArgs).
  float k_scale = 1.0f, v_scale = 1.0f;
};

Status paged_attention_cpu(const PagedAttentionArgs& args);

}  // namespace kiln

// ---- CUDA backend (kernels/cuda/attention) ------------------------------------------------------
// Same arguments with bf16 q and out, bf16 or fp8 e4m3 k_cache / v_cache (fp8 tiles are widened
// to bf16 in shared memory; k_scale folds into the softmax scale, v_scale into the output), int32
// metadata, all device tensors, and a power-of-two block_size; fp32 softmax and accumulation.
// Tuned variants (decode and prefill): q bf16 x cache {bf16, fp8 e4m3} x head_dim {64, 128}; any
// other head_dim <= 256 takes the portable kernel (both cache dtypes).
struct CUstream_st;  // cudaStream_t without the CUDA headers

namespace kiln {

// Picks by shape: decode when num_tokens == batch (every q_len is then 1; split-K when
// batch * num_kv_heads cannot fill the GPU, its workspace taken with cudaMallocAsync on `stream`),
// prefill otherwise (any mix of q_len, causal, over the paged prefix).
// decode_workspace: asked, for a split-K decode, for a workspace of the bytes it needs (its
// counters zero before the first use, see below), so that no allocation or memset comes between
// the kernel and its neighbours on the stream (they would cut the programmatic dependent launch
// chain of a decode graph); empty: allocated on the stream per call.
using DecodeWorkspaceFn = std::function<Result<void*>(int64_t bytes)>;
Status paged_attention_cuda(const PagedAttentionArgs& args, CUstream_st* stream,
                            const DecodeWorkspaceFn& decode_workspace = {});

// The explicit kernels, for benchmarks and tests. Decode needs every q_len == 1. num_splits 0 picks
// by shape; with more than one split the kernel needs decode_attention_workspace_bytes(args,
// num_splits) bytes of device workspace whose first 32 KiB (the split counters) are zero before its
// first use; every launch leaves them zero, whatever its shape, so one workspace large enough serves
// all (nullptr: allocated and zeroed on the stream, per call).
Result<int64_t> decode_attention_workspace_bytes(const PagedAttentionArgs& args, int num_splits);
Status decode_attention_cuda(const PagedAttentionArgs& args, int num_splits, void* workspace,
                             CUstream_st* stream);
Status prefill_attention_cuda(const PagedAttentionArgs& args, CUstream_st* stream);

// Decode attention with RoPE and the KV-cache write fused in: the same result as
// rope_kv_write_cuda(rope) followed by decode attention over the cache (the same bits), in one
// kernel (no RoPE kernel and kernel boundary in a decode layer). rope.q / k / v: the step's
// unrotated q and new k / v rows ([batch, heads, head_dim] bf16 views with contiguous heads, e.g.
// of a fused qkv output), rope.positions / inv_freq / slot_mapping as for rope_kv_write_cuda;
// attn: the caches, scale and metadata as for decode_attention_cuda (attn.q is not read; rope's
// caches are not read either: attn's are written; fp8 caches with attn's k_scale / v_scale and
// rope.hadamard_qk). One query token per sequence. Supported where decode_attention_rope_supported
// says (bf16 or fp8 e4m3 caches, head_dim 64 / 128, hadamard_qk with fp8 only); else an
// unimplemented error. num_splits and decode_workspace as for decode_attention_cuda /
// paged_attention_cuda (0 = planned by shape).
struct RopeKvWriteArgs;
bool decode_attention_rope_supported(DType cache, int64_t head_dim, int64_t group, bool hadamard_qk);
Status decode_attention_rope_cuda(const RopeKvWriteArgs& rope, const PagedAttentionArgs& attn, int num_splits,
                                  CUstream_st* stream, const DecodeWorkspaceFn& decode_workspace = {});

}  // namespace kiln
