// Hopper (sm_90a) prefill attention over the paged KV cache, FlashAttention-3 style: a producer
// warpgroup loads Q/K/V tiles with TMA on mbarriers, two consumer warpgroups run wgmma for QK^T and
// PV with the online softmax of one tile overlapped with the products of the next. Same contract as
// paged_attention_cuda's prefill (attention.h: varlen batch, GQA/MQA, a prompt extending a cached
// prefix, sliding window), plus a non-causal mode. Variants (cache dtype x head_dim): bf16 x {64,
// 128} and fp8 e4m3 x {64, 128}; q and out are bf16 either way (the fp8 variant quantizes each Q
// row to e4m3 with its own scale in the kernel: one e4m3 part for d128, hi + lo parts for d64 (the
// shipped tunings), or for d128 takes Q quantized outside (HopperPrefillOptions::q_fp8); K = fp8 *
// k_scale, V = fp8 * v_scale). fp8 d128 runs fastest with a workspace
// (HopperPrefillOptions::workspace): V is then transposed once per KV head by a pre-pass instead of
// in every CTA's shared memory.
#pragma once
#include <span>

#include "kiln/kernels/attention.h"

struct CUstream_st;  // cudaStream_t without the CUDA headers

namespace kiln {

struct HopperPrefillOptions {
  bool causal = true;  // false: every query token sees all kv_lens[b] keys of its sequence
  // The two consumer warpgroups take turns on the tensor cores (off: A/B runs). Tunings compiled
  // "solo" never do, the shipped fp8 d128 one among them (faster without, at every length).
  bool pingpong = true;
  // KV heads whose CTAs are scheduled together (all their row blocks before the next chunk), for L2
  // reuse on long sequences; 0: as many as keep ~24 MB of one sequence's K/V, all of them when short.
  int kv_heads_per_chunk = 0;
  // Compiled tuning of the variant: 0 = the shipped one, i = variant.tunings[i] (A/B runs: stages,
  // persistent grid, polynomial exponentials, softmax overlapping PV). Out of range: an error.
  int tuning = 0;
  // fp8 d128: device scratch of at least hopper_prefill_workspace_bytes(args, sum of kv_lens) bytes
  // for V transposed once per KV head by a pre-pass (hopper_vt_prepass_cuda) before the attention
  // kernel, whose producer then loads the transposed tiles with plain TMA. Tunings marked "vtpre"
  // use it; without it (nullptr) they run the in-kernel transpose of the shipped row before them.
  // Other variants ignore it.
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
  // fp8 d128: Q already quantized per row (quantize_fp8_cuda over q viewed as [tokens * hq, d]:
  // q_fp8 [tokens, hq, d] e4m3 on the device, 16-byte aligned; q_scales [tokens, hq] f32, q ~= q_fp8
  // * scale). Tunings marked "qtma" then TMA-load Q tiles instead of quantizing Q at the start of
  // every work; without it (nullptr) they quantize q themselves. Other tunings ignore it.
  const void* q_fp8 = nullptr;
  const float* q_scales = nullptr;
};

using HopperPrefillRun = Status (*)(const PagedAttentionArgs& args, const HopperPrefillOptions& options,
                                    CUstream_st* stream);
struct HopperPrefillTuning {
  const char* name;  // e.g. "persistent k3v2" (see the tables in hopper_prefill_<dtype>*.cu)
  HopperPrefillRun run;
};

// One compiled variant; the tests iterate over the same table that dispatch looks up.
struct HopperPrefillVariant {
  DType cache_dtype;  // kBF16 or kFp8E4M3
  int head_dim;
  HopperPrefillRun run;                          // runs tunings[options.tuning]
  std::span<const HopperPrefillTuning> tunings;  // [0]: the shipped one
};
std::span<const HopperPrefillVariant> hopper_prefill_variants();

// Why the Hopper kernel cannot run these arguments (an error naming the reason), or ok: needs an
// sm_90 device, q / out bf16 [tokens, hq, d], k / v caches [blocks, block_size, hkv, d] both bf16
// or both fp8 e4m3, contiguous, block_size a power of two >= 16, hq % hkv == 0, a head_dim of the
// table, int32 metadata on the device.
Status hopper_prefill_check(const PagedAttentionArgs& args);
bool hopper_prefill_supported(const PagedAttentionArgs& args);

// args: q [num_tokens, num_q_heads, head_dim] bf16, k_cache / v_cache [num_blocks, block_size,
// num_kv_heads, head_dim] bf16 or fp8 e4m3 (with k_scale / v_scale), cu_seqlens_q [batch + 1],
// kv_lens [batch], block_tables [batch, max_blocks] int32, out [num_tokens, num_q_heads, head_dim]
// bf16; all on the device. Causal unless options say otherwise.
Status prefill_attention_hopper_cuda(const PagedAttentionArgs& args, CUstream_st* stream);
Status prefill_attention_hopper_cuda(const PagedAttentionArgs& args, const HopperPrefillOptions& options,
                                     CUstream_st* stream);

// ---- V pre-transposed per KV head (fp8 e4m3, head_dim 128) ------------------------------------
// Workspace layout (bytes): [header: int32 tile_offsets[batch + 1], padded to 1024] then Vt tiles
// [num_kv_heads][cap_tiles][head_dim][128 keys] e4m3, cap_tiles = (bytes - header) / (num_kv_heads *
// head_dim * 128). Sequence b's keys [128 j, 128 j + 128) are tile tile_offsets[b] + j of its kv
// head (tile_offsets[b] = sum over i < b of ceil(kv_lens[i] / 128)); within each 16 keys the
// columns are permuted as the fp8 P fragment wants them (column 4t + i holds key 2t + (i & 1) + 8
// (i >> 1)); keys >= kv_len are 0. Tiles past a sequence's last are not written.
namespace hopper_vt {
constexpr int64_t kTileKeys = 128;
inline int64_t header_bytes(int64_t batch) { return (4 * (batch + 1) + 1023) / 1024 * 1024; }
inline int64_t tile_bytes(int64_t head_dim) { return head_dim * kTileKeys; }
// Tiles per kv head that `bytes` of workspace hold (0 when not even the header fits).
inline int64_t cap_tiles(int64_t bytes, int64_t batch, int64_t num_kv_heads, int64_t head_dim) {
  const int64_t rest = bytes - header_bytes(batch);
  return rest > 0 ? rest / (num_kv_heads * tile_bytes(head_dim)) : 0;
}
}  // namespace hopper_vt
// Bytes for a batch of args' shape whose kv_lens sum to total_kv_tokens (known on the host); 0 for
// variants without a pre-pass (bf16 caches, head_dim 64).
int64_t hopper_prefill_workspace_bytes(const PagedAttentionArgs& args, int64_t total_kv_tokens);
// The pre-pass alone (the vtpre tunings run it themselves): args.v_cache fp8 e4m3 [blocks, bs,
// hkv, 128], kv_lens / block_tables int32, all on the device; workspace on the device. A sequence
// whose tiles do not fit cap_tiles is not written (the attention reads zeros there: size it with
// hopper_prefill_workspace_bytes).
Status hopper_vt_prepass_cuda(const PagedAttentionArgs& args, void* workspace, int64_t workspace_bytes,
                              CUstream_st* stream);
// Its CPU reference: the same bytes from host tensors (v_cache fp8 e4m3 bytes, int32 metadata).
Status hopper_vt_prepass_cpu(const PagedAttentionArgs& args, void* workspace, int64_t workspace_bytes);

}  // namespace kiln
