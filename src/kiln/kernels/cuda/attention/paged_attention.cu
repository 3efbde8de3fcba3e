// Entry points of the CUDA paged attention family: argument checks, variant lookup, split-K
// planning for decode, and paged_attention_cuda, which picks decode or prefill by shape.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "kiln/kernels/cuda/attention/attention_params.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/hadamard.h"
#include "kiln/kernels/rope.h"

namespace kiln::cuda {
namespace {

bool is_device(const Tensor& t) { return t.device == Device::kCuda && t.data != nullptr; }

Status check_metadata(const Tensor& t, const char* name, int ndim) {
  if (t.dtype != DType::kInt32 || t.ndim != ndim || !is_device(t) || t.strides[ndim - 1] != 1)
    return invalid_argument(std::string("paged_attention_cuda: ") + name + " must be a " + std::to_string(ndim) +
                            "-D int32 cuda tensor with unit inner stride, got " + t.shape_string());
  return ok_status();
}

int64_t align256(int64_t n) { return (n + 255) / 256 * 256; }

}  // namespace

Result<const AttentionVariant*> find_attention_variant(std::span<const AttentionVariant> table, const char* family,
                                                       DType dtype, DType cache, int head_dim) {
  std::string supported;
  for (const AttentionVariant& v : table) {
    if (v.dtype == dtype && v.cache == cache && v.head_dim == head_dim) return &v;
    supported += std::string(supported.empty() ? "" : ", ") + std::string(dtype_name(v.dtype)) + "/" +
                 std::string(dtype_name(v.cache)) + " x " + std::to_string(v.head_dim);
  }
  return unimplemented(std::string(family) + ": no variant for q " + std::string(dtype_name(dtype)) + ", cache " +
                       std::string(dtype_name(cache)) + ", head_dim " + std::to_string(head_dim) +
                       "; supported (q/cache x head_dim): " + supported);
}

Result<const AttentionVariant*> find_attention_variant(std::span<const AttentionVariant> table, const char* family,
                                                       DType dtype, int head_dim) {
  return find_attention_variant(table, family, dtype, dtype, head_dim);
}

Result<PagedAttentionParams> make_paged_attention_params(const PagedAttentionArgs& a) {
  const Tensor &q = a.q, &kc = a.k_cache, &vc = a.v_cache, &out = a.out;
  if (q.ndim != 3 || kc.ndim != 4 || out.ndim != 3 || vc.ndim != 4 || q.shape != out.shape || kc.shape != vc.shape ||
      kc.shape[3] != q.shape[2] || kc.shape[2] == 0 || q.shape[1] % kc.shape[2] != 0)
    return invalid_argument(
        "paged_attention_cuda: want q/out [tokens, hq, d], k/v cache [blocks, block_size, hkv, d] "
        "with hq % hkv == 0; got q " +
        q.shape_string() + ", k_cache " + kc.shape_string() + ", v_cache " + vc.shape_string() + ", out " +
        out.shape_string());
  for (const Tensor* t : {&q, &kc, &vc, &out})
    if (!is_device(*t) || !t->is_contiguous())
      return invalid_argument("paged_attention_cuda: q, caches and out must be contiguous cuda tensors; got " +
                              t->shape_string());
  const bool fp8 = kc.dtype == DType::kFp8E4M3;
  if (q.dtype != DType::kBF16 || out.dtype != DType::kBF16 || (kc.dtype != DType::kBF16 && !fp8) ||
      vc.dtype != kc.dtype)
    return unimplemented("paged_attention_cuda: want bf16 q/out and bf16 or fp8_e4m3 caches; got q " +
                         std::string(dtype_name(q.dtype)) + ", caches " + std::string(dtype_name(kc.dtype)) + "/" +
                         std::string(dtype_name(vc.dtype)) + ", out " + std::string(dtype_name(out.dtype)));
  if (fp8 && !(a.k_scale > 0.f && a.v_scale > 0.f && std::isfinite(a.k_scale) && std::isfinite(a.v_scale)))
    return invalid_argument("paged_attention_cuda: fp8 cache scales must be finite and > 0");
  const int64_t batch = a.kv_lens.numel();
  KILN_RETURN_IF_ERROR(check_metadata(a.cu_seqlens_q, "cu_seqlens_q", 1));
  KILN_RETURN_IF_ERROR(check_metadata(a.kv_lens, "kv_lens", 1));
  KILN_RETURN_IF_ERROR(check_metadata(a.block_tables, "block_tables", 2));
  if (a.cu_seqlens_q.numel() != batch + 1 || a.block_tables.shape[0] != batch)
    return invalid_argument(
        "paged_attention_cuda: cu_seqlens_q [batch + 1] and block_tables [batch, blocks] must "
        "match kv_lens [batch]");
  const int64_t block_size = kc.shape[1];
  if (block_size <= 0 || (block_size & (block_size - 1)) != 0)
    return unimplemented("paged_attention_cuda: block_size " + std::to_string(block_size) + " is not a power of two");
  const int64_t max_kv = a.block_tables.shape[1] * block_size;
  if (!(a.scale > 0.f) || a.sliding_window < 0 || max_kv > (int64_t{1} << 30) ||
      q.shape[0] * q.shape[1] > (int64_t{1} << 31) - 1)
    return invalid_argument("paged_attention_cuda: need scale > 0, sliding_window >= 0 and sizes that fit int32");
  PagedAttentionParams p{};
  p.q = q.data;
  p.k_cache = kc.data;
  p.v_cache = vc.data;
  p.cu_seqlens_q = a.cu_seqlens_q.ptr<int32_t>();
  p.kv_lens = a.kv_lens.ptr<int32_t>();
  p.block_tables = a.block_tables.ptr<int32_t>();
  p.out = out.data;
  p.num_tokens = static_cast<int>(q.shape[0]);
  p.batch = static_cast<int>(batch);
  p.num_q_heads = static_cast<int>(q.shape[1]);
  p.num_kv_heads = static_cast<int>(kc.shape[2]);
  p.group = p.num_q_heads / p.num_kv_heads;
  p.head_dim = static_cast<int>(q.shape[2]);
  p.block_size_log2 = 0;
  while ((int64_t{1} << p.block_size_log2) < block_size) ++p.block_size_log2;
  p.table_stride = static_cast<int>(a.block_tables.strides[0]);
  p.max_kv_len = static_cast<int>(max_kv);
  p.scale = a.scale;
  p.sliding_window = static_cast<int>(std::min<int64_t>(a.sliding_window, max_kv + 1));
  p.k_scale = fp8 ? a.k_scale : 1.0f;
  p.v_scale = fp8 ? a.v_scale : 1.0f;
  p.q_stride = q.shape[1] * q.shape[2];
  p.num_splits = 1;
  p.split_len = static_cast<int>(
      std::max<int64_t>(kDecodeTileKeys, (max_kv + kDecodeTileKeys - 1) / kDecodeTileKeys * kDecodeTileKeys));
  return p;
}

// Up to a cluster's worth of splits meet in distributed shared memory instead of the workspace
// (where the device launches clusters, sm_90 on; KILN_DECODE_CLUSTER=0: never). H100, graph-timed
// (attention_bench graph), 32/8 heads, d128, B1 x 256 keys (4 splits), workspace -> cluster: bf16
// cache 6.3 -> 4.5 us, fp8 6.9 -> 5.2; e2e tok/s (two rounds, three calls): Llama-3-8B fp8 +0.5 to
// +1.8%, + fp8 KV +2.0 to +2.4%, Mixtral fp8 -0.4 to +0.6%. Clusters of 16 (non-portable) were
// slower than the workspace (B1 x 1K fp8 7.9 vs 6.9 us).
static bool decode_clusters() {
  static const bool on = [] {
    const char* v = std::getenv("KILN_DECODE_CLUSTER");
    int device = 0, clusters = 0;
    return !(v && std::string(v) == "0") && cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device) == cudaSuccess && clusters != 0;
  }();
  return on;
}

// The most splits a plan takes: at most 32 per (sequence, kv head) unless fewer leave SMs without a
// CTA (the last CTA's merge reads every split's partial), never below a 64-key tile a split.
constexpr int64_t kMinSplitKeys = 64;
static int64_t most_splits(int64_t keys, int64_t ctas) {
  return std::min<int64_t>({kMaxDecodeSplits, (keys + kMinSplitKeys - 1) / kMinSplitKeys,
                            std::max<int64_t>(32, (cuda_sm_count() + ctas - 1) / ctas)});
}

// Batched decode (at least kDecodeBatchedCtas (sequence, kv head) pairs): the wave model below split
// too much there. `attention_bench splits` (H100, 2026-11-23, graph-timed, 32/8 heads, d128, batch
// 4..64 x 512..4096 cached tokens, every split 1..8 forced) found the fastest plans at about 1.5
// CTAs per SM whatever the context, up to 2 per SM on long ones; us, old plan -> this one (best
// forced): fp8 B16 x 2K 39.6 -> 31.6 (31.6), B16 x 4K 67.3 -> 55.1 (55.1), B32 x 1K 34.5 -> 29.7
// (29.7), B8 x 4K 35.4 -> 32.9 (32.9); bf16 B8 x 4K 68.1 -> 49.4 (49.4), B4 x 4K 38.0 -> 27.9 (27.9).
// Clusters of 4..8 splits that fill more than 80% of the resident slots lose a wave (bf16, 2 CTAs
// per SM: B8 x 4 splits 22.2 us at 1K against 16.3 with 3).
// Where the pairs alone fill half the SMs, short contexts keep at least 256 keys a split: at B16 x
// 256 keys (a decode graph of 128-256 cached tokens) the rule above split in 2 and the merge
// outweighed the shorter loop. H100, Llama-3-8B fp8 `bench latency` (decode step ms, one binary,
// two rounds, no floor -> floor): B16 3.722 / 3.723 -> 3.633 / 3.636, + fp8 KV 3.764 / 3.768 ->
// 3.687 / 3.703; B16 x 512 keys and B8 x 256 unchanged; but B4 x 256 3.519 / 3.521 -> 3.570 / 3.558,
// B4 x 512 +2%, B8 x 512 +1.2% (more splits win there), so fewer pairs keep the rule above.
// KILN_DECODE_MIN_SPLIT_KEYS=N sets the floor (0: none, the rule above alone), for tuning.
static int64_t min_batched_split_keys() {
  static const int64_t keys = [] {
    const char* v = std::getenv("KILN_DECODE_MIN_SPLIT_KEYS");
    return v && *v ? std::max<int64_t>(0, std::atoll(v)) : int64_t{256};
  }();
  return keys;
}
static int64_t batched_splits(int64_t keys, int64_t ctas, int64_t slots, int64_t most) {
  const int64_t sms = cuda_sm_count();
  int64_t s = (3 * sms + ctas) / (2 * ctas);              // round(1.5 sms / ctas)
  s = std::max(s, std::min(2 * sms / ctas, keys / 512));  // long contexts: up to 2 per SM, >= 512 keys a split
  if (const int64_t floor_keys = min_batched_split_keys(); floor_keys > 0 && 2 * ctas >= sms)
    s = std::min(s, std::max<int64_t>(1, keys / floor_keys));
  while (s >= 4 && s <= kMaxClusterSplits && 5 * ctas * s > 4 * slots) --s;  // clusters that would not all fit
  return std::clamp<int64_t>(s, 1, most);
}

Status plan_decode_splits(PagedAttentionParams& p, const AttentionVariant& variant, int num_splits) {
  const int keys = std::max(1, p.sliding_window > 0 ? std::min(p.sliding_window, p.max_kv_len) : p.max_kv_len);
  auto round_tile = [](int64_t n) { return (n + kDecodeTileKeys - 1) / kDecodeTileKeys * kDecodeTileKeys; };
  if (num_splits < 0) return invalid_argument("decode_attention: num_splits < 0");
  if (num_splits == 0) {
    // The CTAs [batch * kv_heads * splits] run in waves of `slots` (the resident CTAs of the GPU).
    // Model: a wave streams its CTAs' K/V at full bandwidth if it fills at least half the slots
    // and takes as long as a half-full one otherwise; every CTA also pays a fixed ramp-up, partial
    // write and merge worth kSplitCostBytes of streaming. Candidates: the most splits that fit
    // 1/2, 1, 2, 3 or 4 waves (a handful: this runs per call), at most 32 per (sequence, kv head)
    // unless fewer leave SMs without a CTA (the last CTA's merge reads every split's partial),
    // never below 64 keys per split (a tile; was 256: batch-1 decode at 128-384 cached tokens, two
    // interleaved end-to-end runs each, tok/s: Llama-3-8B fp8 245.3 / 246.5 -> 248.2 / 247.6, + fp8
    // KV 241.5 / 244.1 -> 243.4 / 245.1, Mixtral fp8 169.3 / 169.7 -> 170.6 / 170.6). Measured on
    // the H100, 32/8, d128: bf16 B1 x 32K (2 CTAs per SM) 32 splits 81% of copy, 16: 78%, 64:
    // 75%; fp8 (4-5 per SM) 32: 63-65%, 16: 57-61%, 64: 58-60%; fp8 B64 x 4096 with 3 CTAs per SM
    // (396 slots): 1 split (1.3 waves) 73%, 2 (the model's pick) 86-87%.
    constexpr double kSplitCostBytes = 64 << 10;
    const double key_bytes = 2.0 * p.head_dim * (variant.cache == DType::kFp8E4M3 ? 1 : 2);  // K + V
    const int64_t ctas = static_cast<int64_t>(p.batch) * p.num_kv_heads;
    const int64_t slots = static_cast<int64_t>(cuda_sm_count()) * variant.ctas_per_sm();
    num_splits = 1;
    if (ctas >= kDecodeBatchedCtas && slots > 0) {
      num_splits = static_cast<int>(batched_splits(keys, ctas, slots, most_splits(keys, ctas)));
    } else if (ctas > 0 && slots > 0) {
      auto cost = [&](int64_t len, int64_t splits) {  // modelled time, in bytes streamed
        const int64_t full = ctas * splits / slots, rest = ctas * splits % slots;
        const double wave = static_cast<double>(len) * key_bytes + kSplitCostBytes;
        return static_cast<double>(full) * wave +
               (rest == 0 ? 0.0 : std::max(0.5, static_cast<double>(rest) / slots) * (wave - kSplitCostBytes) +
                                      kSplitCostBytes);
      };
      double best = cost(keys, 1);
      const int64_t most = most_splits(keys, ctas);
      for (const int64_t half_waves : {1, 2, 4, 6, 8}) {
        const int64_t want = std::min(most, half_waves * slots / (2 * ctas));
        if (want < 2) continue;
        const int64_t len = std::max<int64_t>(kMinSplitKeys, round_tile((keys + want - 1) / want));
        const int64_t splits = (keys + len - 1) / len;
        if (const double c = cost(len, splits); c < best) best = c, num_splits = static_cast<int>(splits);
      }
    }
    // Plans of more than 8 splits whose keys fit 8 splits of at most kClusterSplitKeys take 8, one
    // cluster (decode_clusters). H100, graph-timed us, 32/8 heads, d128, planner -> 8: B1 x 1K fp8
    // 6.8 -> 6.2, bf16 6.4 -> 6.2-6.3; B1 x 2K fp8 9.1 -> 8.4, bf16 8.5 -> 8.4; with 512 keys a split
    // B1 x 4K went 11.4 -> 14.1 (bf16), and capping every plan, B1 x 32K fp8 33.9 -> 55. e2e, two
    // rounds, 1K prompt + fp8 KV: Mistral-7B fp8 279.5 -> 287.6, Mixtral fp8 175.1 -> 178.8 tok/s.
    constexpr int64_t kClusterSplitKeys = 256;
    if (decode_clusters() && num_splits > kMaxClusterSplits &&
        (keys + kMaxClusterSplits - 1) / kMaxClusterSplits <= kClusterSplitKeys)
      num_splits = kMaxClusterSplits;
  }
  num_splits = std::min(num_splits, kMaxDecodeSplits);
  if (static_cast<int64_t>(p.batch) * p.num_kv_heads > kMaxDecodeCounters) num_splits = 1;  // no counter for it
  p.split_len = static_cast<int>(round_tile((keys + num_splits - 1) / num_splits));
  p.num_splits = static_cast<int>((keys + p.split_len - 1) / p.split_len);
  p.partial_o = nullptr;
  p.partial_lse = nullptr;
  p.split_counters = nullptr;
  p.cluster_merge = decode_clusters() && p.num_splits >= 2 && p.num_splits <= kMaxClusterSplits;
  return ok_status();
}

// Workspace: [counters (kDecodeCounterBytes) | lse | partial O], each 256-byte aligned.
int64_t decode_workspace_bytes(const PagedAttentionParams& p) {
  if (p.num_splits <= 1 || p.cluster_merge) return 0;
  const int64_t slots = static_cast<int64_t>(p.num_splits) * p.batch * p.num_q_heads;
  return kDecodeCounterBytes + align256(slots * 4) + align256(slots * p.head_dim * 4);
}

void bind_decode_workspace(PagedAttentionParams& p, void* workspace) {
  const int64_t slots = static_cast<int64_t>(p.num_splits) * p.batch * p.num_q_heads;
  char* base = static_cast<char*>(workspace);
  p.split_counters = reinterpret_cast<int*>(base);
  p.partial_lse = reinterpret_cast<float*>(base + kDecodeCounterBytes);
  p.partial_o = reinterpret_cast<float*>(base + kDecodeCounterBytes + align256(slots * 4));
}

}  // namespace kiln::cuda

namespace kiln {

using cuda::PagedAttentionParams;

namespace {

// workspace, else provide(bytes) when given, else allocated on the stream for this call.
Status run_decode(PagedAttentionParams p, const cuda::AttentionVariant& v, int num_splits, void* workspace,
                  CUstream_st* stream, const DecodeWorkspaceFn& provide = {}) {
  KILN_RETURN_IF_ERROR(cuda::plan_decode_splits(p, v, num_splits));
  const int64_t bytes = cuda::decode_workspace_bytes(p);
  if (bytes == 0) return v.launch(p, stream);
  if (!workspace && provide) {
    KILN_ASSIGN_OR_RETURN(workspace, provide(bytes));
  }
  const bool own = workspace == nullptr;
  if (own) {
    cudaError_t err = cudaMallocAsync(&workspace, static_cast<size_t>(bytes), stream);
    if (err != cudaSuccess)
      return resource_exhausted(std::string("decode_attention workspace: ") + cudaGetErrorString(err));
    err = cudaMemsetAsync(workspace, 0, static_cast<size_t>(cuda::kDecodeCounterBytes), stream);
    if (err != cudaSuccess) {
      (void)cudaFreeAsync(workspace, stream);
      return internal_error(std::string("decode_attention workspace: ") + cudaGetErrorString(err));
    }
  }
  cuda::bind_decode_workspace(p, workspace);
  Status status = v.launch(p, stream);
  if (own) (void)cudaFreeAsync(workspace, stream);
  return status;
}

}  // namespace

Result<int64_t> decode_attention_workspace_bytes(const PagedAttentionArgs& args, int num_splits) {
  KILN_ASSIGN_OR_RETURN(PagedAttentionParams p, cuda::make_paged_attention_params(args));
  KILN_ASSIGN_OR_RETURN(
      const cuda::AttentionVariant* v,
      cuda::find_attention_variant(cuda::decode_attention_variants(), "decode_attention", args.q.dtype,
                                   args.k_cache.dtype, p.head_dim));
  KILN_RETURN_IF_ERROR(cuda::plan_decode_splits(p, *v, num_splits));
  return cuda::decode_workspace_bytes(p);
}

Status decode_attention_cuda(const PagedAttentionArgs& args, int num_splits, void* workspace, CUstream_st* stream) {
  KILN_ASSIGN_OR_RETURN(PagedAttentionParams p, cuda::make_paged_attention_params(args));
  if (p.num_tokens != p.batch)
    return invalid_argument("decode_attention_cuda: want one query token per sequence, got " +
                            std::to_string(p.num_tokens) + " tokens for " + std::to_string(p.batch) + " sequences");
  if (p.group > 16) return unimplemented("decode_attention_cuda: at most 16 query heads per kv head");
  KILN_ASSIGN_OR_RETURN(const cuda::AttentionVariant* v,
                        cuda::find_attention_variant(cuda::decode_attention_variants(), "decode_attention",
                                                     args.q.dtype, args.k_cache.dtype, p.head_dim));
  return run_decode(p, *v, num_splits, workspace, stream);
}

bool decode_attention_rope_supported(DType cache, int64_t head_dim, int64_t group, bool hadamard_qk) {
  // The Hadamard key rotation exists for fp8 caches only (as in rope_kv_write_cuda).
  return (cache == DType::kFp8E4M3 || (cache == DType::kBF16 && !hadamard_qk)) && (head_dim == 64 || head_dim == 128) &&
         group >= 1 && group <= 16;
}

Status decode_attention_rope_cuda(const RopeKvWriteArgs& r, const PagedAttentionArgs& args, int num_splits,
                                  CUstream_st* stream, const DecodeWorkspaceFn& decode_workspace) {
  constexpr const char* kName = "decode_attention_rope_cuda";
  if (r.q.ndim != 3 || r.k.ndim != 3 || r.v.ndim != 3 || r.q.dtype != DType::kBF16 || r.k.dtype != DType::kBF16 ||
      r.v.dtype != DType::kBF16 || r.k.shape != r.v.shape || r.q.shape[0] != r.k.shape[0] || r.q.shape[2] != r.k.shape[2])
    return invalid_argument(std::string(kName) + ": want bf16 q [n, hq, d], k and v [n, hkv, d]; got q " +
                            r.q.shape_string() + ", k " + r.k.shape_string() + ", v " + r.v.shape_string());
  const int64_t n = r.q.shape[0], d = r.q.shape[2];
  for (const Tensor* t : {&r.q, &r.k, &r.v})
    if (!cuda::is_device(*t) || t->strides[2] != 1 || t->strides[1] != d || t->strides[0] < t->shape[1] * d ||
        t->strides[0] % 8 != 0 || !cuda::aligned16(t->data))
      return invalid_argument(std::string(kName) + ": q, k and v need contiguous heads and 16-byte aligned token rows on the device");
  // Checks of the attention side with q's shape (attn.q is not read).
  PagedAttentionArgs dense = args;
  dense.q = Tensor::view(r.q.data, DType::kBF16, {n, r.q.shape[1], d}, Device::kCuda);
  KILN_ASSIGN_OR_RETURN(PagedAttentionParams p, cuda::make_paged_attention_params(dense));
  if (p.num_tokens != p.batch)
    return invalid_argument(std::string(kName) + ": want one query token per sequence, got " + std::to_string(n) +
                            " tokens for " + std::to_string(p.batch) + " sequences");
  if (r.k.shape[1] != p.num_kv_heads)
    return invalid_argument(std::string(kName) + ": k has " + std::to_string(r.k.shape[1]) + " heads, the cache " +
                            std::to_string(p.num_kv_heads));
  if (!decode_attention_rope_supported(args.k_cache.dtype, d, p.group, r.hadamard_qk))
    return unimplemented(std::string(kName) + ": cache " + std::string(dtype_name(args.k_cache.dtype)) + ", head_dim " +
                         std::to_string(d) + ", group " + std::to_string(p.group) +
                         (r.hadamard_qk ? ", hadamard_qk" : "") +
                         " (supported: bf16 or fp8 e4m3 caches, head_dim 64 / 128, up to 16 q heads per kv head, "
                         "hadamard_qk with fp8 caches only)");
  KILN_RETURN_IF_ERROR(cuda::expect_device(r.positions, DType::kInt32, n, kName, "positions"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(r.inv_freq, DType::kF32, d / 2, kName, "inv_freq"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(r.slot_mapping, DType::kInt32, n, kName, "slot_mapping"));
  KILN_ASSIGN_OR_RETURN(const cuda::AttentionVariant* v,
                        cuda::find_attention_variant(cuda::decode_attention_variants(), "decode_attention",
                                                     DType::kBF16, args.k_cache.dtype, p.head_dim));
  p.q_stride = r.q.strides[0];
  p.rope = 1;
  p.k_new = r.k.data;
  p.v_new = r.v.data;
  p.k_stride = r.k.strides[0];
  p.v_stride = r.v.strides[0];
  p.positions = r.positions.ptr<int32_t>();
  p.inv_freq = r.inv_freq.ptr<float>();
  p.slots = r.slot_mapping.ptr<int32_t>();
  p.num_slots = args.k_cache.shape[0] * args.k_cache.shape[1];
  p.rope_hadamard = r.hadamard_qk ? 1 : 0;
  p.hadamard_norm = hadamard_norm(d);
  return run_decode(p, *v, num_splits, nullptr, stream, decode_workspace);
}

Status prefill_attention_cuda(const PagedAttentionArgs& args, CUstream_st* stream) {
  KILN_ASSIGN_OR_RETURN(PagedAttentionParams p, cuda::make_paged_attention_params(args));
  KILN_ASSIGN_OR_RETURN(const cuda::AttentionVariant* v,
                        cuda::find_attention_variant(cuda::prefill_attention_variants(), "prefill_attention",
                                                     args.q.dtype, args.k_cache.dtype, p.head_dim));
  return v->launch(p, stream);
}

Status paged_attention_cuda(const PagedAttentionArgs& args, CUstream_st* stream, const DecodeWorkspaceFn& decode_workspace) {
  KILN_ASSIGN_OR_RETURN(PagedAttentionParams p, cuda::make_paged_attention_params(args));
  const DType q = args.q.dtype, cache = args.k_cache.dtype;
  // Shapes outside the tuned tables (head_dim other than 64/128) take the portable kernel.
  Result<const cuda::AttentionVariant*> prefill =
      cuda::find_attention_variant(cuda::prefill_attention_variants(), "prefill_attention", q, cache, p.head_dim);
  if (!prefill.ok()) return cuda::generic_attention_launch(p, cache, stream);
  if (p.num_tokens == p.batch && p.group <= 16) {
    KILN_ASSIGN_OR_RETURN(
        const cuda::AttentionVariant* v,
        cuda::find_attention_variant(cuda::decode_attention_variants(), "decode_attention", q, cache, p.head_dim));
    return run_decode(p, *v, 0, nullptr, stream, decode_workspace);
  }
  return (*prefill)->launch(p, stream);
}

}  // namespace kiln
