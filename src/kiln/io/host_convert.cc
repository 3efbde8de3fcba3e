// Bulk conversions: f32 -> f16 by integer arithmetic (float_to_half_fast3_rtne, F. Giesen), the
// rest through core's scalar converters, split into chunks over the global thread pool.
#include "kiln/io/host_convert.h"

#include <algorithm>
#include <vector>

#include "kiln/core/thread_pool.h"

namespace kiln {

uint16_t f32_to_f16_fast(float f) {
  uint32_t x = f32_bits(f);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint32_t o;
  if (x >= (127u + 16u) << 23) {  // >= 65536 (after rounding, too big), inf or NaN
    o = x > (255u << 23) ? 0x7e00u : 0x7c00u;
  } else if (x < (113u << 23)) {  // below f16's smallest normal: let the FPU round the subnormal
    const uint32_t magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    o = f32_bits(f32_from_bits(x) + f32_from_bits(magic)) - magic;
  } else {
    const uint32_t mant_odd = (x >> 13) & 1u;
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;  // rebias exponent, round half up...
    x += mant_odd;                                          // ...then to even
    o = x >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

void store_f32_as(const float* src, DType dst, void* out, int64_t n) {
  switch (dst) {
    case DType::kF32:
      std::copy(src, src + n, static_cast<float*>(out));
      break;
    case DType::kF16: {
      auto* o = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16_fast(src[i]);
      break;
    }
    case DType::kBF16: {
      auto* o = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(src[i]);
      break;
    }
    default:
      break;
  }
}

namespace {
// Widens n elements of a 16-bit float type to f32.
void load_16_as_f32(const uint16_t* src, DType t, float* out, int64_t n) {
  if (t == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(src[i]);
  }
}
}  // namespace

Status convert_parallel(const void* src, DType src_type, void* dst, DType dst_type, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const bool fast_src = src_type == DType::kF32 || src_type == DType::kF16 || src_type == DType::kBF16;
  const bool fast_dst = dst_type == DType::kF32 || dst_type == DType::kF16 || dst_type == DType::kBF16;
  if (!fast_src || !fast_dst) {
    // Rare types (fp8, int8): core's converter, checked once on an empty range for the message.
    KILN_RETURN_IF_ERROR(convert(src, src_type, dst, dst_type, 0));
  }
  const int64_t num_chunks = (n + kChunk - 1) / kChunk;
  ThreadPool::global().parallel_for(num_chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> tmp;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunk, len = std::min(kChunk, n - begin);
      const auto* s = static_cast<const uint8_t*>(src) + dtype_bytes(src_type, begin);
      auto* d = static_cast<uint8_t*>(dst) + dtype_bytes(dst_type, begin);
      if (src_type == dst_type) {
        std::copy(s, s + dtype_bytes(src_type, len), d);
      } else if (fast_src && fast_dst) {
        const float* f = reinterpret_cast<const float*>(s);
        if (src_type != DType::kF32) {
          tmp.resize(static_cast<size_t>(len));
          load_16_as_f32(reinterpret_cast<const uint16_t*>(s), src_type, tmp.data(), len);
          f = tmp.data();
        }
        store_f32_as(f, dst_type, d, len);
      } else {
        (void)convert(s, src_type, d, dst_type, len);  // validated above
      }
    }
  });
  return ok_status();
}

}  // namespace kiln
