// GGML tensor types: block geometry of every type a GGUF file may hold, and CPU dequantization of
// the ones kiln reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1) into f32, f16 or bf16.
// Block layouts (little-endian):
//   Q8_0: f16 d, int8 q[32];                  x[i] = d * q[i]
//   Q4_0: f16 d, u8 qs[16];                   x[i] = d * (nibble(i) - 8)
//   Q4_1: f16 d, f16 m, u8 qs[16];            x[i] = d * nibble(i) + m
//   nibble(i) = qs[i] & 15 for i < 16, qs[i - 16] >> 4 for i >= 16.
#pragma once
#include <cstdint>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/io/gguf.h"

namespace kiln {

struct GgmlTypeInfo {
  uint32_t type;
  const char* name;
  int64_t block_size;  // elements per block
  int64_t type_size;   // bytes per block
};

// Geometry of a ggml type, or null for a type id this build does not know.
const GgmlTypeInfo* ggml_type_info(GgmlType t);
bool ggml_can_dequantize(GgmlType t);
// "F32, F16, BF16, Q8_0, Q4_0, Q4_1"
const char* ggml_dequantizable_names();

// Bytes of a row of n elements; -1 when n is not a whole number of blocks or the type is unknown.
int64_t ggml_row_bytes(GgmlType t, int64_t n);

// Dequantizes numel elements (a whole number of blocks) from src into out, contiguous, as dst
// (f32, f16 or bf16). Runs over ThreadPool::global().
Status dequantize_ggml(GgmlType type, const uint8_t* src, int64_t numel, DType dst, void* out);

}  // namespace kiln
