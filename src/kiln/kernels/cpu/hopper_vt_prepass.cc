// CPU reference of the Hopper prefill attention's V pre-pass (hopper_vt_prepass_cuda): fp8 e4m3 V
// pages of each sequence and KV head gathered into transposed 128-key tiles (layout in
// attention_hopper.h). The test oracle of the CUDA pre-pass.
#include <cstdint>
#include <cstring>
#include <string>

#include "kiln/kernels/attention_hopper.h"

namespace kiln {

Status hopper_vt_prepass_cpu(const PagedAttentionArgs& a, void* workspace, int64_t workspace_bytes) {
  const Tensor& v = a.v_cache;
  if (v.dtype != DType::kFp8E4M3 || v.ndim != 4 || !v.is_contiguous() || a.kv_lens.dtype != DType::kInt32 ||
      a.block_tables.dtype != DType::kInt32 || a.block_tables.ndim != 2 || a.kv_lens.numel() != a.block_tables.shape[0])
    return invalid_argument("hopper_vt_prepass_cpu: want an fp8 e4m3 v_cache [blocks, bs, hkv, d], int32 kv_lens "
                            "[batch] and block_tables [batch, blocks]; got v_cache " + v.shape_string());
  const int64_t bs = v.shape[1], hkv = v.shape[2], d = v.shape[3], batch = a.kv_lens.numel();
  const int64_t cap = hopper_vt::cap_tiles(workspace_bytes, batch, hkv, d), tile = hopper_vt::tile_bytes(d);
  if (workspace == nullptr || cap <= 0) return invalid_argument("hopper_vt_prepass_cpu: workspace too small");
  const uint8_t* src = static_cast<const uint8_t*>(v.data);
  const int32_t* kv_lens = a.kv_lens.ptr<int32_t>();
  const int32_t* tables = a.block_tables.ptr<int32_t>();
  const int64_t table_stride = a.block_tables.strides[0];
  int32_t* offsets = static_cast<int32_t*>(workspace);
  uint8_t* tiles = static_cast<uint8_t*>(workspace) + hopper_vt::header_bytes(batch);
  int64_t off = 0;
  for (int64_t b = 0; b < batch; ++b) {
    offsets[b] = static_cast<int32_t>(off);
    const int64_t kv = kv_lens[b], n = (kv + hopper_vt::kTileKeys - 1) / hopper_vt::kTileKeys;
    for (int64_t j = 0; j < n && off + j < cap; ++j)
      for (int64_t h = 0; h < hkv; ++h) {
        uint8_t* dst = tiles + (h * cap + off + j) * tile;
        for (int64_t col = 0; col < hopper_vt::kTileKeys; ++col) {
          // Column 4t + i of each 16 holds key 2t + (i & 1) + 8 (i >> 1) of those 16.
          const int64_t c = col % 16, key = j * hopper_vt::kTileKeys + col - c + 2 * (c / 4) + (c & 1) + 8 * ((c >> 1) & 1);
          const uint8_t* row = nullptr;
          if (key < kv) {
            const int64_t block = tables[b * table_stride + key / bs];
            row = src + ((block * bs + key % bs) * hkv + h) * d;
          }
          for (int64_t e = 0; e < d; ++e) dst[e * hopper_vt::kTileKeys + col] = row ? row[e] : 0;
        }
      }
    off += n;
  }
  offsets[batch] = static_cast<int32_t>(off);
  return ok_status();
}

}  // namespace kiln
