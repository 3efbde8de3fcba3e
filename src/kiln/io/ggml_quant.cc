// Dequantization of GGML blocks. Each kernel decodes one block into 32 f32 values, exactly as
// gguf-py's reference (products of an f16 scale and a 4/8-bit integer are exact in f32, so the
// result does not depend on FMA contraction), then stores them as the destination dtype.
#include "kiln/io/ggml_quant.h"

#include <algorithm>
#include <cstring>

#include "kiln/core/thread_pool.h"
#include "kiln/io/host_convert.h"

namespace kiln {
namespace {

constexpr GgmlTypeInfo kTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},      {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
};

constexpr int64_t kQBlock = 32;

inline uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// One block -> 32 floats.
void decode_q8_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const auto* q = reinterpret_cast<const int8_t*>(b + 2);
  for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]);
}
void decode_q4_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const uint8_t* qs = b + 2;
  for (int i = 0; i < 16; ++i) {
    y[i] = d * static_cast<float>((qs[i] & 0xf) - 8);
    y[i + 16] = d * static_cast<float>((qs[i] >> 4) - 8);
  }
}
void decode_q4_1(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float m = f16_to_f32(load_u16(b + 2));
  const uint8_t* qs = b + 4;
  for (int i = 0; i < 16; ++i) {
    y[i] = d * static_cast<float>(qs[i] & 0xf) + m;
    y[i + 16] = d * static_cast<float>(qs[i] >> 4) + m;
  }
}

using BlockDecoder = void (*)(const uint8_t*, float*);

BlockDecoder block_decoder(GgmlType t) {
  switch (t) {
    case GgmlType::kQ8_0: return decode_q8_0;
    case GgmlType::kQ4_0: return decode_q4_0;
    case GgmlType::kQ4_1: return decode_q4_1;
    default: return nullptr;
  }
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(GgmlType t) {
  for (const auto& info : kTypes) {
    if (info.type == static_cast<uint32_t>(t)) return &info;
  }
  return nullptr;
}

const char* ggml_type_name(GgmlType t) {
  const GgmlTypeInfo* info = ggml_type_info(t);
  return info ? info->name : "unknown";
}

bool ggml_can_dequantize(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16 || block_decoder(t) != nullptr;
}

const char* ggml_dequantizable_names() { return "F32, F16, BF16, Q8_0, Q4_0, Q4_1"; }

int64_t ggml_row_bytes(GgmlType t, int64_t n) {
  const GgmlTypeInfo* info = ggml_type_info(t);
  if (!info || n < 0 || n % info->block_size != 0) return -1;
  return n / info->block_size * info->type_size;
}

Status dequantize_ggml(GgmlType type, const uint8_t* src, int64_t numel, DType dst, void* out) {
  if (dst != DType::kF32 && dst != DType::kF16 && dst != DType::kBF16) {
    return invalid_argument("dequantize to " + std::string(dtype_name(dst)) + " (supported: f32, f16, bf16)");
  }
  switch (type) {
    case GgmlType::kF32: return convert_parallel(src, DType::kF32, out, dst, numel);
    case GgmlType::kF16: return convert_parallel(src, DType::kF16, out, dst, numel);
    case GgmlType::kBF16: return convert_parallel(src, DType::kBF16, out, dst, numel);
    default: break;
  }
  const BlockDecoder decode = block_decoder(type);
  if (!decode) {
    return unimplemented(std::string("ggml type ") + ggml_type_name(type) + " (" +
                         std::to_string(static_cast<uint32_t>(type)) + ") cannot be dequantized (supported: " +
                         ggml_dequantizable_names() + ")");
  }
  if (numel % kQBlock != 0) {
    return invalid_argument("dequantize: " + std::to_string(numel) + " elements is not a whole number of blocks");
  }
  const int64_t block_bytes = ggml_type_info(type)->type_size;
  const int64_t elem_bytes = dtype_bytes(dst, 1);
  const int64_t num_blocks = numel / kQBlock;
  ThreadPool::global().parallel_for(num_blocks, 1024, [&](int64_t b0, int64_t b1) {
    float y[kQBlock];
    for (int64_t b = b0; b < b1; ++b) {
      decode(src + b * block_bytes, y);
      store_f32_as(y, dst, static_cast<uint8_t*>(out) + b * kQBlock * elem_bytes, kQBlock);
    }
  });
  return ok_status();
}

}  // namespace kiln
