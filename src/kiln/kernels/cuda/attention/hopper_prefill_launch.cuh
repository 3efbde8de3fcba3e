// Launch side of the Hopper prefill attention (included by the per-variant table files
// hopper_prefill_<dtype>_d<dim>.cu, each compiled on its own so the tunings build in parallel): TMA
// tensor maps over q and the paged caches, the persistent / per-work grid, run_tuned<kFp8, kHeadDim,
// Tune> (one compiled tuning) and run_table (a variant's dispatch over its tuning rows).
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <span>
#include <string>

#include "kiln/kernels/attention_hopper.h"
#include "kiln/kernels/cuda/attention/hopper_prefill_kernel.cuh"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/sm90.h"

namespace kiln::hopper_launch {

using cuda::hopper::HopperConfig;
using cuda::hopper::HopperPrefillParams;
using cuda::hopper::HopperTune;

inline bool on_device(const Tensor& t) { return t.device == Device::kCuda && t.data != nullptr; }

inline Status check_int32(const Tensor& t, const char* name, int ndim) {
  if (t.dtype != DType::kInt32 || t.ndim != ndim || !on_device(t) || t.strides[ndim - 1] != 1)
    return invalid_argument(std::string("prefill_attention_hopper: ") + name + " must be a " + std::to_string(ndim) +
                            "-D int32 cuda tensor with unit inner stride, got " + t.shape_string());
  return ok_status();
}

using cuda::device_is_sm90;
using cuda::tensor_map_encoder;

// A tiled tensor map; dims / box innermost first, strides in bytes for dims 1.. (rank - 1).
template <int kRank>
inline Status encode_map(CUtensorMap& map, const void* data, CUtensorMapDataType type, const cuuint64_t (&dims)[kRank],
                  const cuuint64_t (&strides)[kRank - 1], const cuuint32_t (&box)[kRank], int row_bytes) {
  PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return internal_error("prefill_attention_hopper: cuTensorMapEncodeTiled is not available");
  cuuint32_t unit[kRank];
  for (int i = 0; i < kRank; ++i) unit[i] = 1;
  const CUresult r = encode(&map, type, kRank, const_cast<void*>(data), dims, strides, box, unit,
                            CU_TENSOR_MAP_INTERLEAVE_NONE,
                            row_bytes == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return internal_error("prefill_attention_hopper: cuTensorMapEncodeTiled failed (" +
                                               std::to_string(static_cast<int>(r)) + ")");
  return ok_status();
}

template <bool kFp8, int kHeadDim, class T>
Status run_tuned(const PagedAttentionArgs& a, const HopperPrefillOptions& options, CUstream_st* stream) {
  using C = HopperConfig<kFp8, kHeadDim, T>;
  if constexpr (C::kQTma) {  // no pre-quantized Q: the kernel quantizes it
    if (options.q_fp8 == nullptr || options.q_scales == nullptr)
      return run_tuned<kFp8, kHeadDim, typename T::NoQTma>(a, options, stream);
    if ((reinterpret_cast<uintptr_t>(options.q_fp8) & 15) != 0)
      return invalid_argument("prefill_attention_hopper: q_fp8 must be 16-byte aligned (TMA)");
  }
  if constexpr (C::kVtPre) {  // no workspace: the in-kernel transpose
    if (options.workspace == nullptr) return run_tuned<kFp8, kHeadDim, typename T::Fallback>(a, options, stream);
  }
  KILN_RETURN_IF_ERROR(hopper_prefill_check(a));
  if (a.q.shape[2] != kHeadDim || (a.k_cache.dtype == DType::kFp8E4M3) != kFp8)
    return invalid_argument("prefill_attention_hopper: variant does not match the arguments");
  auto kernel = cuda::hopper::hopper_prefill_kernel<kFp8, kHeadDim, T>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("prefill_attention_hopper: ") + cudaGetErrorString(attr));

  HopperPrefillParams p{};
  const int64_t tokens = a.q.shape[0], hq = a.q.shape[1], blocks = a.k_cache.shape[0], bs = a.k_cache.shape[1],
                hkv = a.k_cache.shape[2];
  const int64_t es = C::kElemBytes;
  if (tokens == 0 || a.kv_lens.numel() == 0) return ok_status();
  const CUtensorMapDataType cache_type = kFp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const cuuint64_t cache_dims[4] = {static_cast<cuuint64_t>(kHeadDim), static_cast<cuuint64_t>(hkv),
                                    static_cast<cuuint64_t>(bs), static_cast<cuuint64_t>(blocks)};
  const cuuint64_t cache_strides[3] = {static_cast<cuuint64_t>(kHeadDim * es),
                                       static_cast<cuuint64_t>(hkv * kHeadDim * es),
                                       static_cast<cuuint64_t>(bs * hkv * kHeadDim * es)};
  const cuuint32_t cache_box[4] = {C::kPanelElems, 1, 16, 1};
  KILN_RETURN_IF_ERROR(encode_map<4>(p.k_map, a.k_cache.data, cache_type, cache_dims, cache_strides, cache_box,
                                     C::kRowBytes));
  KILN_RETURN_IF_ERROR(encode_map<4>(p.v_map, a.v_cache.data, cache_type, cache_dims, cache_strides, cache_box,
                                     C::kRowBytes));
  if constexpr (C::kVtPre) {
    // V transposed per kv head into the workspace first, then a 4-D map over its tiles [hkv,
    // cap_tiles, d, 128 keys], one 16 KB tile a box (128-byte rows: the swizzle the consumers read).
    const int64_t batch = a.kv_lens.numel(), cap = hopper_vt::cap_tiles(options.workspace_bytes, batch, hkv, kHeadDim);
    KILN_RETURN_IF_ERROR(hopper_vt_prepass_cuda(a, options.workspace, options.workspace_bytes, stream));
    const cuuint64_t vt_dims[4] = {static_cast<cuuint64_t>(C::kBlockN), static_cast<cuuint64_t>(kHeadDim),
                                   static_cast<cuuint64_t>(cap), static_cast<cuuint64_t>(hkv)};
    const cuuint64_t vt_strides[3] = {static_cast<cuuint64_t>(C::kBlockN),
                                      static_cast<cuuint64_t>(C::kBlockN * kHeadDim),
                                      static_cast<cuuint64_t>(cap * C::kBlockN * kHeadDim)};
    const cuuint32_t vt_box[4] = {static_cast<cuuint32_t>(C::kBlockN), static_cast<cuuint32_t>(kHeadDim), 1, 1};
    KILN_RETURN_IF_ERROR(encode_map<4>(p.vt_map, static_cast<uint8_t*>(options.workspace) + hopper_vt::header_bytes(batch),
                                       CU_TENSOR_MAP_DATA_TYPE_UINT8, vt_dims, vt_strides, vt_box, 128));
    p.vt_offsets = static_cast<const int32_t*>(options.workspace);
  }
  if constexpr (!kFp8 || C::kQTma) {  // bf16 q, or kQTma's e4m3 q_fp8 (same shape)
    const cuuint64_t q_dims[3] = {static_cast<cuuint64_t>(kHeadDim), static_cast<cuuint64_t>(hq),
                                  static_cast<cuuint64_t>(tokens)};
    const cuuint64_t q_strides[2] = {static_cast<cuuint64_t>(kHeadDim * es), static_cast<cuuint64_t>(hq * kHeadDim * es)};
    const cuuint32_t q_box[3] = {C::kPanelElems, 1, C::kQTma ? C::kBlockM / 2 : C::kBlockM};  // kQTma: a warpgroup's rows
    KILN_RETURN_IF_ERROR(encode_map<3>(p.q_map, kFp8 ? options.q_fp8 : a.q.data,
                                       kFp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, q_dims,
                                       q_strides, q_box, C::kRowBytes));
    if constexpr (C::kQTma) p.q_scales = options.q_scales;
  }
  p.q = a.q.data;
  p.cu_seqlens_q = a.cu_seqlens_q.ptr<int32_t>();
  p.kv_lens = a.kv_lens.ptr<int32_t>();
  p.block_tables = a.block_tables.ptr<int32_t>();
  p.out = a.out.data;
  p.num_tokens = static_cast<int>(tokens);
  p.batch = static_cast<int>(a.kv_lens.numel());
  p.num_q_heads = static_cast<int>(hq);
  p.num_kv_heads = static_cast<int>(hkv);
  p.group = static_cast<int>(hq / hkv);
  p.num_blocks = static_cast<int>(blocks);
  p.block_size_log2 = 0;
  while ((int64_t{1} << p.block_size_log2) < bs) ++p.block_size_log2;
  p.table_stride = static_cast<int>(a.block_tables.strides[0]);
  const int64_t max_kv = a.block_tables.shape[1] * bs;
  p.sliding_window = static_cast<int>(std::min<int64_t>(a.sliding_window, max_kv + 1));
  p.causal = options.causal ? 1 : 0;
  p.pingpong = options.pingpong && !T::kLaunchSolo ? 1 : 0;
  p.heads_per_chunk = static_cast<int>(hq);
  {
    // kv heads per chunk: as many as keep one sequence's K and V of the chunk within ~24 MB of L2
    // (the longest possible sequence, from the block table width), a divisor of num_kv_heads.
    const int64_t bytes_per_kv_head = std::max<int64_t>(1, 2 * max_kv * kHeadDim * es);
    int64_t want = options.kv_heads_per_chunk > 0 ? options.kv_heads_per_chunk
                                                  : std::max<int64_t>(1, (int64_t{24} << 20) / bytes_per_kv_head);
    want = std::min(want, hkv);
    while (hkv % want != 0) --want;
    p.heads_per_chunk = static_cast<int>(want * (hq / hkv));
  }
  p.scale_log2 = a.scale * cuda::hopper::kLog2e * (kFp8 ? a.k_scale : 1.f);
  p.v_scale = kFp8 ? a.v_scale : 1.f;

  // Row blocks over all sequences: sum ceil(q_len / kBlockM) <= this bound (extra work ids are skipped).
  const int64_t row_blocks = (tokens + C::kBlockM - 1) / C::kBlockM + p.batch;
  if (row_blocks > 65535 || row_blocks * hq > (int64_t{1} << 30))
    return out_of_range("prefill_attention_hopper: " + std::to_string(row_blocks) + " row blocks (> 65535)");
  p.row_blocks = static_cast<int>(row_blocks);
  p.num_works = static_cast<int>(row_blocks * hq);
  const dim3 grid = T::kPersistent ? dim3(static_cast<unsigned>(std::min<int64_t>(p.num_works, cuda_sm_count())))
                                   : dim3(static_cast<unsigned>(hq), static_cast<unsigned>(row_blocks));
  kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return internal_error(std::string("prefill_attention_hopper launch: ") + cudaGetErrorString(err));
  return ok_status();
}

// Tunings per variant, HopperTune<K stages, V stages, persistent, polynomial exp2 column mask (fp8), softmax
// overlapping PV, split Q (fp8), feature bits (fp8 d128), bench probe>; row [0] of each table ships
// (measured best on the H100, docs/perf.md), the rest are A/B rows.
template <bool kFp8, int kHeadDim, int kK, int kV, bool kPersistent, int kPoly = 0, bool kOverlap = false,
          bool kSplitQ = false, int kFeatures = 0, int kProbe = 0>
constexpr HopperPrefillRun tuned =
    &run_tuned<kFp8, kHeadDim, cuda::hopper::HopperTune<kK, kV, kPersistent, kPoly, kOverlap, kSplitQ, kFeatures, kProbe>>;

// Runs row options.tuning of `tunings` (out of range: an error).
inline Status run_table(std::span<const HopperPrefillTuning> tunings, const PagedAttentionArgs& a,
                        const HopperPrefillOptions& options, CUstream_st* stream) {
  const int n = static_cast<int>(tunings.size());
  if (options.tuning < 0 || options.tuning >= n)
    return invalid_argument("prefill_attention_hopper: tuning " + std::to_string(options.tuning) + " not in [0, " +
                            std::to_string(n) + ")");
  return tunings[static_cast<size_t>(options.tuning)].run(a, options, stream);
}

}  // namespace kiln::hopper_launch
