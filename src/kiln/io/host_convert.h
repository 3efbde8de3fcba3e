// Bulk host conversion between element types for the loaders: a fast exact f32 -> f16/bf16 store
// and a multi-threaded convert() over ThreadPool::global(). Results equal core's scalar
// conversions bit for bit (round-to-nearest-even, same NaN/overflow rules).
#pragma once
#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

// f32 -> f16, round-to-nearest-even, overflow to inf, NaN to quiet NaN (= core f32_to_f16).
uint16_t f32_to_f16_fast(float f);

// Stores n f32 values as dst (f32, f16 or bf16) at out. Other dst types are ignored (callers check).
void store_f32_as(const float* src, DType dst, void* out, int64_t n);

// convert() from dtype.h, parallel over chunks, with the fast f16 path.
Status convert_parallel(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);

}  // namespace kiln
