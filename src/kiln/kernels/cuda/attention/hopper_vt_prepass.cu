// V pre-pass of the Hopper fp8 prefill attention: each sequence's fp8 e4m3 V pages, per KV head,
// gathered into transposed 128-key tiles Vt [head_dim, 128 keys] (keys permuted within each 16 as
// the fp8 P fragment wants them, layout in attention_hopper.h), so that the attention kernel's
// producer loads them with one plain TMA box per tile instead of transposing in shared memory.
// Memory-bound: 2 x (V bytes of the batch) of traffic. head_dim 128 only (the fp8 d128 variant).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kiln/kernels/attention_hopper.h"
#include "kiln/kernels/cuda/attention/hopper_v_transpose.cuh"

namespace kiln {
namespace {

constexpr int kD = 128, kKeys = 128, kThreads = 256;

struct VtPrepassParams {
  const uint8_t* v;             // [blocks, bs, hkv, 128] e4m3
  const int32_t* kv_lens;       // [batch]
  const int32_t* block_tables;  // [batch, table_stride]
  int32_t* offsets;             // [batch + 1] tile offsets (workspace header)
  uint8_t* tiles;               // [hkv, cap_tiles, 128 d, 128 keys]
  int batch, hkv, block_size_log2, table_stride, cap_tiles;
};

// Grid (tiles of the longest possible sequence, hkv, batch), 256 threads: CTA (j, h, b) writes tile
// j of sequence b, kv head h. Keys are staged as loaded ([128 keys][128 d], 16-byte chunks), then
// warp w transposes keys 16w .. 16w + 15 (lane q: d 4q .. 4q + 3; 16 conflict-free word loads, the
// byte permutes of transpose_v) into a staged Vt whose 16-byte chunk c of row r sits at chunk c ^
// ((r >> 2) & 7) (conflict-free 16-byte stores), written out with coalesced 16-byte stores.
__global__ void __launch_bounds__(kThreads) hopper_vt_prepass_kernel(const VtPrepassParams p) {
  __shared__ alignas(16) uint8_t stage[kKeys * kD];
  __shared__ int s_off;
  const int j = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int kv = p.kv_lens[b];
  if (warp == 0) {  // tile offset of sequence b: sum of ceil(kv_lens[i] / 128), i < b
    int sum = 0;
    for (int i = lane; i < b; i += 32) sum += (p.kv_lens[i] + kKeys - 1) / kKeys;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
      s_off = sum;
      if (j == 0 && h == 0) {
        p.offsets[b] = sum;
        if (b == p.batch - 1) p.offsets[p.batch] = sum + (kv + kKeys - 1) / kKeys;
      }
    }
  }
  __syncthreads();
  const int off = s_off, key0 = j * kKeys;
  if (key0 >= kv || off + j >= p.cap_tiles) return;
  const int bs_mask = (1 << p.block_size_log2) - 1;
#pragma unroll
  for (int r = 0; r < kKeys * kD / 16 / kThreads; ++r) {
    const int idx = tid + kThreads * r, key = idx / (kD / 16), c = idx % (kD / 16), token = key0 + key;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (token < kv) {
      const int64_t block = p.block_tables[static_cast<int64_t>(b) * p.table_stride + (token >> p.block_size_log2)];
      val = *reinterpret_cast<const uint4*>(
          p.v + ((block * (bs_mask + 1) + (token & bs_mask)) * p.hkv + h) * kD + 16 * c);
    }
    *reinterpret_cast<uint4*>(stage + key * kD + 16 * c) = val;
  }
  __syncthreads();
  uint32_t w[16];
#pragma unroll
  for (int k = 0; k < 16; ++k) w[k] = *reinterpret_cast<const uint32_t*>(stage + (16 * warp + k) * kD + 4 * lane);
  uint32_t out[4][4];  // [d 4 lane + e][column quad t]: columns 4t + i = keys 2t + (i & 1) + 8 (i >> 1)
  cuda::hopper::permute_words_16x4(w, out);
  __syncthreads();  // every warp has read its keys: the stage now takes Vt
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int row = 4 * lane + e;
    *reinterpret_cast<uint4*>(stage + row * kKeys + 16 * (warp ^ (lane & 7))) =
        make_uint4(out[e][0], out[e][1], out[e][2], out[e][3]);
  }
  __syncthreads();
  uint8_t* dst = p.tiles + (static_cast<int64_t>(h) * p.cap_tiles + off + j) * (kD * kKeys);
#pragma unroll
  for (int r = 0; r < kKeys * kD / 16 / kThreads; ++r) {
    const int idx = tid + kThreads * r, row = idx / (kKeys / 16), c = idx % (kKeys / 16);
    *reinterpret_cast<uint4*>(dst + 16 * idx) =
        *reinterpret_cast<const uint4*>(stage + row * kKeys + 16 * (c ^ ((row >> 2) & 7)));
  }
}

bool device_tensor(const Tensor& t) { return t.device == Device::kCuda && t.data != nullptr; }

}  // namespace

int64_t hopper_prefill_workspace_bytes(const PagedAttentionArgs& a, int64_t total_kv_tokens) {
  if (a.v_cache.dtype != DType::kFp8E4M3 || a.v_cache.ndim != 4 || a.v_cache.shape[3] != kD) return 0;
  const int64_t batch = a.kv_lens.numel(), hkv = a.v_cache.shape[2];
  const int64_t tiles = (std::max<int64_t>(total_kv_tokens, 0) + (kKeys - 1) * batch) / kKeys;
  return hopper_vt::header_bytes(batch) + hkv * hopper_vt::tile_bytes(kD) * std::max<int64_t>(tiles, 1);
}

Status hopper_vt_prepass_cuda(const PagedAttentionArgs& a, void* workspace, int64_t workspace_bytes,
                              CUstream_st* stream) {
  const Tensor& v = a.v_cache;
  if (v.dtype != DType::kFp8E4M3 || v.ndim != 4 || v.shape[3] != kD || !v.is_contiguous() || !device_tensor(v))
    return unimplemented("hopper_vt_prepass: want a contiguous fp8 e4m3 v_cache [blocks, bs, hkv, 128] on the device; "
                         "got " + v.shape_string());
  if (a.kv_lens.dtype != DType::kInt32 || a.block_tables.dtype != DType::kInt32 || a.block_tables.ndim != 2 ||
      a.block_tables.strides[1] != 1 || a.kv_lens.numel() != a.block_tables.shape[0] || !device_tensor(a.kv_lens) ||
      !device_tensor(a.block_tables))
    return invalid_argument("hopper_vt_prepass: want int32 kv_lens [batch] and block_tables [batch, blocks] on the device");
  const int64_t bs = v.shape[1], hkv = v.shape[2], batch = a.kv_lens.numel();
  if (bs <= 0 || (bs & (bs - 1)) != 0) return invalid_argument("hopper_vt_prepass: block_size must be a power of two");
  const int64_t cap = hopper_vt::cap_tiles(workspace_bytes, batch, hkv, kD);
  if (workspace == nullptr || cap <= 0 || (reinterpret_cast<uintptr_t>(workspace) & 15) != 0)
    return invalid_argument("hopper_vt_prepass: workspace missing, unaligned (16) or smaller than " +
                            std::to_string(hopper_prefill_workspace_bytes(a, 1)) + " bytes");
  const int64_t tiles = (a.block_tables.shape[1] * bs + kKeys - 1) / kKeys;
  if (batch == 0 || tiles == 0) return ok_status();
  if (batch > 65535 || hkv > 65535 || tiles > (int64_t{1} << 30) || cap > (int64_t{1} << 30))
    return out_of_range("hopper_vt_prepass: grid too large");
  VtPrepassParams p{};
  p.v = static_cast<const uint8_t*>(v.data);
  p.kv_lens = a.kv_lens.ptr<int32_t>();
  p.block_tables = a.block_tables.ptr<int32_t>();
  p.offsets = static_cast<int32_t*>(workspace);
  p.tiles = static_cast<uint8_t*>(workspace) + hopper_vt::header_bytes(batch);
  p.batch = static_cast<int>(batch);
  p.hkv = static_cast<int>(hkv);
  while ((int64_t{1} << p.block_size_log2) < bs) ++p.block_size_log2;
  p.table_stride = static_cast<int>(a.block_tables.strides[0]);
  p.cap_tiles = static_cast<int>(cap);
  hopper_vt_prepass_kernel<<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(hkv),
                                  static_cast<unsigned>(batch)),
                             kThreads, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return internal_error(std::string("hopper_vt_prepass launch: ") + cudaGetErrorString(err));
  return ok_status();
}

}  // namespace kiln
