// Decode attention with RoPE and the KV write fused in (decode_attention_rope_cuda) against the
// two kernels it replaces, rope_kv_write_cuda then decode attention, on the same device inputs:
// outputs and both caches must agree bit for bit (the same rotation code, the same attention
// loop); and against the CPU (rope_kv_write_cpu, then paged_attention_cpu) within bf16
// tolerance. Caches bf16 and fp8 e4m3 (with and without the q / k Hadamard rotation); head_dim
// 64 / 128, GQA groups 1 / 3 / 4 / 12 / 16, kv lengths with the newest key
// in a split's first tiles and in a later one, block sizes 1 / 16, 1 split, split-K forced and
// planned; then a kernel before it that writes q / k / v late (programmatic dependent launch:
// nothing of them may be read before the wait), and the errors. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

#include "kiln/kernels/attention.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/rope.h"
#include "tests/kernels/device_tensors_cuda.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/pdl_late_writer.cuh"

namespace kiln {
namespace {

struct Case {
  int64_t hq, hkv, d, block_size;
  std::vector<int32_t> kv_lens;
  DType cache = DType::kBF16;
  bool hadamard = false;  // fp8: the q / k Walsh-Hadamard rotation (the model's default for fp8 caches)
};

constexpr float kKScale = 0.02f, kVScale = 0.01f;  // fp8 caches: |k|, |v| <= ~1.5 -> <= ~150 in e4m3

std::string describe(const Case& c) {
  std::string s = std::string(dtype_name(c.cache)) + (c.hadamard ? " hadamard" : "") + " hq=" + std::to_string(c.hq) + " hkv=" + std::to_string(c.hkv) + " d=" + std::to_string(c.d) +
                  " bs=" + std::to_string(c.block_size) + " kv=";
  for (int32_t l : c.kv_lens) s += std::to_string(l) + " ";
  return s;
}

using test::download_bytes;
using test::upload;

// One decode step: the fused qkv output of b sequences (bf16), caches holding each sequence's keys
// before the newest (the newest slot and the spare blocks NaN), positions / slots of the newest key.
struct Step {
  Case c;
  int64_t batch = 0, width = 0, table_width = 0, num_blocks = 0;
  HostTensor qkv, k_cache, v_cache;  // f32 holding bf16 values; fp8 caches: their e4m3 bytes
  std::vector<int32_t> cu, tables, positions, slots;
  std::vector<float> inv_freq;
  DeviceTensor dqkv, dcu, dkv, dtables, dpos, dslots, dinv;

  Tensor heads(const Tensor& qkv_dev, int64_t first, int64_t n_heads) const {
    Tensor t = Tensor::view(static_cast<uint16_t*>(qkv_dev.data) + first * c.d, DType::kBF16, {batch, n_heads, c.d},
                            Device::kCuda);
    t.strides[0] = width;
    return t;
  }
  RopeKvWriteArgs rope(const Tensor& kc, const Tensor& vc, const Tensor& q_out) const {
    return {heads(dqkv.tensor, 0, c.hq), heads(dqkv.tensor, c.hq, c.hkv), heads(dqkv.tensor, c.hq + c.hkv, c.hkv),
            dpos.tensor, dinv.tensor, dslots.tensor, kc, vc, k_scale(), v_scale(), q_out, c.hadamard};
  }
  PagedAttentionArgs attn(const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& out) const {
    return {q, kc, vc, dcu.tensor, dkv.tensor, dtables.tensor, out, 1.0f / std::sqrt(static_cast<float>(c.d)), 0,
            k_scale(), v_scale()};
  }
  float k_scale() const { return c.cache == DType::kFp8E4M3 ? kKScale : 1.f; }
  float v_scale() const { return c.cache == DType::kFp8E4M3 ? kVScale : 1.f; }
  DeviceTensor cache(const HostTensor& host) const { return upload(host.tensor, c.cache); }
};

Step make_step(const Case& c, std::mt19937& rng) {
  Step s;
  s.c = c;
  s.batch = static_cast<int64_t>(c.kv_lens.size());
  s.width = (c.hq + 2 * c.hkv) * c.d;
  const int64_t bs = c.block_size;
  int64_t used = 0;
  for (int32_t l : c.kv_lens) {
    used += (l + bs - 1) / bs;
    s.table_width = std::max<int64_t>(s.table_width, (l + bs - 1) / bs + 1);
  }
  s.num_blocks = used + 2;
  HostTensor b = test::random_tensor(DType::kBF16, {s.batch, s.width}, rng);
  s.qkv = HostTensor::zeros(DType::kF32, {s.batch, s.width});
  EXPECT_TRUE(convert(b.tensor.data, DType::kBF16, s.qkv.tensor.data, DType::kF32, b.tensor.numel()).ok());
  s.k_cache = HostTensor::zeros(DType::kF32, {s.num_blocks, bs, c.hkv, c.d});
  s.v_cache = HostTensor::zeros(DType::kF32, {s.num_blocks, bs, c.hkv, c.d});
  std::fill_n(s.k_cache.tensor.ptr<float>(), s.k_cache.tensor.numel(), NAN);
  std::fill_n(s.v_cache.tensor.ptr<float>(), s.v_cache.tensor.numel(), NAN);
  std::vector<int32_t> perm(static_cast<size_t>(s.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  s.tables.assign(static_cast<size_t>(s.batch * s.table_width), 1 << 28);
  s.cu = {0};
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  size_t next = 0;
  for (int64_t i = 0; i < s.batch; ++i) {
    const int32_t l = c.kv_lens[static_cast<size_t>(i)];
    int32_t* table = s.tables.data() + i * s.table_width;
    for (int64_t j = 0; j < (l + bs - 1) / bs; ++j) table[j] = perm[next++];
    for (int64_t j = 0; j + 1 < l; ++j) {  // earlier keys: bf16 values
      const int64_t slot = table[j / bs] * bs + j % bs;
      for (int64_t e = 0; e < c.hkv * c.d; ++e) {
        s.k_cache.tensor.ptr<float>()[slot * c.hkv * c.d + e] = bf16_to_f32(f32_to_bf16(u(rng)));
        s.v_cache.tensor.ptr<float>()[slot * c.hkv * c.d + e] = bf16_to_f32(f32_to_bf16(u(rng)));
      }
    }
    s.cu.push_back(static_cast<int32_t>(i + 1));
    s.positions.push_back(l - 1);
    s.slots.push_back(table[(l - 1) / bs] * static_cast<int32_t>(bs) + (l - 1) % static_cast<int32_t>(bs));
  }
  if (c.cache == DType::kFp8E4M3) {  // the earlier keys as e4m3 bytes (NaN stays NaN: 0x7f)
    for (HostTensor* t : {&s.k_cache, &s.v_cache}) {
      const float scale = t == &s.k_cache ? kKScale : kVScale;
      HostTensor q = HostTensor::zeros(DType::kFp8E4M3, t->tensor.shape.data(), t->tensor.ndim);
      for (int64_t i = 0; i < t->tensor.numel(); ++i) q.tensor.ptr<uint8_t>()[i] = f32_to_fp8_e4m3(t->tensor.ptr<float>()[i] / scale);
      *t = std::move(q);
    }
  }
  RopeScaling scaling;
  scaling.type = RopeScaling::Type::kLlama3;
  scaling.factor = 8.f;
  s.inv_freq = rope_inv_freq(c.d, 500000.f, scaling);
  s.dqkv = upload(s.qkv.tensor, DType::kBF16);
  s.dcu = upload(Tensor::view(s.cu.data(), DType::kInt32, {s.batch + 1}), DType::kInt32);
  s.dkv = upload(Tensor::view(const_cast<int32_t*>(c.kv_lens.data()), DType::kInt32, {s.batch}), DType::kInt32);
  s.dtables = upload(Tensor::view(s.tables.data(), DType::kInt32, {s.batch, s.table_width}), DType::kInt32);
  s.dpos = upload(Tensor::view(s.positions.data(), DType::kInt32, {s.batch}), DType::kInt32);
  s.dslots = upload(Tensor::view(s.slots.data(), DType::kInt32, {s.batch}), DType::kInt32);
  s.dinv = upload(Tensor::view(s.inv_freq.data(), DType::kF32, {c.d / 2}), DType::kF32);
  return s;
}

// The CPU reference of the step: RoPE + KV write on f32 copies, then paged attention; [b, hq, d].
HostTensor cpu_reference(const Step& s) {
  const Case& c = s.c;
  std::vector<float> q(static_cast<size_t>(s.batch * c.hq * c.d)), k(static_cast<size_t>(s.batch * c.hkv * c.d)), v(k.size());
  for (int64_t i = 0; i < s.batch; ++i) {
    const float* row = s.qkv.tensor.ptr<float>() + i * s.width;
    std::copy_n(row, c.hq * c.d, q.data() + i * c.hq * c.d);
    std::copy_n(row + c.hq * c.d, c.hkv * c.d, k.data() + i * c.hkv * c.d);
    std::copy_n(row + (c.hq + c.hkv) * c.d, c.hkv * c.d, v.data() + i * c.hkv * c.d);
  }
  const DType host_cache = c.cache == DType::kFp8E4M3 ? DType::kFp8E4M3 : DType::kF32;
  HostTensor kc = HostTensor::zeros(host_cache, {s.num_blocks, c.block_size, c.hkv, c.d});
  HostTensor vc = HostTensor::zeros(host_cache, {s.num_blocks, c.block_size, c.hkv, c.d});
  std::memcpy(kc.tensor.data, s.k_cache.tensor.data, static_cast<size_t>(kc.tensor.nbytes()));
  std::memcpy(vc.tensor.data, s.v_cache.tensor.data, static_cast<size_t>(vc.tensor.nbytes()));
  auto i32 = [](const std::vector<int32_t>& x, std::initializer_list<int64_t> shape) {
    return Tensor::view(const_cast<int32_t*>(x.data()), DType::kInt32, shape);
  };
  RopeKvWriteArgs r{Tensor::view(q.data(), DType::kF32, {s.batch, c.hq, c.d}),
                    Tensor::view(k.data(), DType::kF32, {s.batch, c.hkv, c.d}),
                    Tensor::view(v.data(), DType::kF32, {s.batch, c.hkv, c.d}),
                    i32(s.positions, {s.batch}),
                    Tensor::view(const_cast<float*>(s.inv_freq.data()), DType::kF32, {c.d / 2}),
                    i32(s.slots, {s.batch}),
                    kc.tensor,
                    vc.tensor,
                    s.k_scale(),
                    s.v_scale()};
  r.hadamard_qk = c.hadamard;
  EXPECT_TRUE(rope_kv_write_cpu(r).ok());
  HostTensor out = HostTensor::zeros(DType::kF32, {s.batch, c.hq, c.d});
  PagedAttentionArgs a{r.q, kc.tensor, vc.tensor, i32(s.cu, {s.batch + 1}), i32(s.c.kv_lens, {s.batch}),
                       i32(s.tables, {s.batch, s.table_width}), out.tensor, 1.0f / std::sqrt(static_cast<float>(c.d)), 0,
                       s.k_scale(), s.v_scale()};
  EXPECT_TRUE(paged_attention_cpu(a).ok());
  return out;
}

double relative_error(const HostTensor& ref, const Tensor& got_dev) {
  Result<HostTensor> got = to_host(got_dev, DType::kF32);
  EXPECT_TRUE(got.ok());
  if (!got.ok()) return INFINITY;
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < ref.tensor.numel(); ++i) {
    const double g = got->tensor.ptr<float>()[i], r = ref.tensor.ptr<float>()[i];
    if (!std::isfinite(g)) return INFINITY;
    max_ref = std::max(max_ref, std::fabs(r));
    max_diff = std::max(max_diff, std::fabs(g - r));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

// A workspace for num_splits (0: the planned split), counters zero.
Result<DeviceBuffer> workspace(const PagedAttentionArgs& a, int num_splits) {
  KILN_ASSIGN_OR_RETURN(int64_t bytes, decode_attention_workspace_bytes(a, num_splits));
  KILN_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::alloc(std::max<int64_t>(bytes, 256)));
  if (cudaMemset(ws.data(), 0, static_cast<size_t>(std::max<int64_t>(bytes, 256))) != cudaSuccess)
    return internal_error("cudaMemset");
  return std::move(ws);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {32, 8, 128, 16, {1, 17, 64, 65, 130, 2048}},  // Llama-3-8B heads; newest key in tile 0, 1 and later
      {4, 4, 128, 1, {3, 97, 300}},
      {16, 1, 128, 16, {129, 700}},
      {9, 3, 64, 16, {1, 64, 200, 1500}},  // SmolLM2 heads
      {8, 2, 64, 1, {33, 513}},
      // fp8 caches, with and without the Hadamard rotation of q / k
      {32, 8, 128, 16, {1, 17, 64, 65, 130, 2048}, DType::kFp8E4M3, true},
      {32, 8, 128, 16, {3, 97, 700}, DType::kFp8E4M3, false},
      {16, 1, 128, 1, {129, 300}, DType::kFp8E4M3, true},
      {24, 2, 128, 16, {50, 1000}, DType::kFp8E4M3, true},  // two head tiles (group 12)
      {9, 3, 64, 16, {1, 64, 200, 1500}, DType::kFp8E4M3, true},
      {8, 2, 64, 1, {33, 513}, DType::kFp8E4M3, false},
  };
  return c;
}

TEST(DecodeRopeAttentionCuda, MatchesRopeThenAttentionBitForBit) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(41);
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    Step s = make_step(c, rng);
    const HostTensor ref = cpu_reference(s);
    for (int splits : {1, 3, 8, 0}) {
      SCOPED_TRACE("splits=" + std::to_string(splits));
      s.dqkv = upload(s.qkv.tensor, DType::kBF16);  // unrotated again (the unfused path rotates k in place)
      DeviceTensor ka = s.cache(s.k_cache), va = s.cache(s.v_cache);
      Result<DeviceTensor> qc = DeviceTensor::empty(DType::kBF16, {s.batch, c.hq, c.d});
      Result<DeviceTensor> out_a = DeviceTensor::empty(DType::kBF16, {s.batch, c.hq, c.d});
      Result<DeviceTensor> out_b = DeviceTensor::empty(DType::kBF16, {s.batch, c.hq, c.d});
      ASSERT_TRUE(qc.ok() && out_a.ok() && out_b.ok());
      ASSERT_TRUE(fill_bytes(out_a->tensor, 0xff).ok() && fill_bytes(out_b->tensor, 0xff).ok());
      // Fused first (rope_kv_write_cuda rotates k inside qkv in place); twice on one workspace (the
      // split counters come back zero).
      DeviceTensor kb = s.cache(s.k_cache), vb = s.cache(s.v_cache);
      const PagedAttentionArgs pb = s.attn(Tensor{}, kb.tensor, vb.tensor, out_b->tensor);
      Result<DeviceBuffer> ws_b = workspace(s.attn(qc->tensor, kb.tensor, vb.tensor, out_b->tensor), splits);
      ASSERT_TRUE(ws_b.ok());
      void* ws = ws_b->data();
      auto provide = [ws](int64_t) -> Result<void*> { return ws; };
      for (int rep = 0; rep < 2; ++rep) {
        ASSERT_TRUE(fill_bytes(out_b->tensor, 0xff).ok());
        const Status st_b = decode_attention_rope_cuda(s.rope(Tensor{}, Tensor{}, Tensor{}), pb, splits, nullptr, provide);
        ASSERT_TRUE(st_b.ok()) << st_b.to_string();
      }
      // Unfused: RoPE + KV write, then decode attention over the written cache.
      const PagedAttentionArgs pa = s.attn(qc->tensor, ka.tensor, va.tensor, out_a->tensor);
      Result<DeviceBuffer> ws_a = workspace(pa, splits);
      ASSERT_TRUE(ws_a.ok());
      const Status st = rope_kv_write_cuda(s.rope(ka.tensor, va.tensor, qc->tensor), nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const Status st_a = decode_attention_cuda(pa, splits, ws_a->data(), nullptr);
      ASSERT_TRUE(st_a.ok()) << st_a.to_string();
      ASSERT_TRUE(cuda_synchronize().ok());
      EXPECT_EQ(download_bytes(out_a->tensor), download_bytes(out_b->tensor)) << "outputs differ";
      EXPECT_EQ(download_bytes(ka.tensor), download_bytes(kb.tensor)) << "k caches differ";
      EXPECT_EQ(download_bytes(va.tensor), download_bytes(vb.tensor)) << "v caches differ";
      const double err = relative_error(ref, out_b->tensor);
      std::printf("[decode_rope] %s splits=%d rel err vs cpu %.2e\n", describe(c).c_str(), splits, err);
      EXPECT_LT(err, c.cache == DType::kFp8E4M3 ? 2e-2 : 1e-2);
    }
  }
}

// Stands in for the qkv GEMM before the fused kernel: lets it launch at once, waits 20 us, then
// writes the step's q / k / v (poisoned with NaN until then) from a staging copy.
struct LateQkv {
  const uint4* src;
  uint4* dst;
  int64_t vecs;
};
__global__ void write_qkv_late(const __grid_constant__ LateQkv a) {
  test::release_next_then_spin(20000);
  for (int64_t i = threadIdx.x; i < a.vecs; i += blockDim.x) a.dst[i] = a.src[i];
}

TEST(DecodeRopeAttentionCuda, ReadsQkvAfterTheKernelBefore) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(43);
  for (const Case& c : {cases()[0], cases()[3], cases()[5], cases()[9]}) {
    SCOPED_TRACE(describe(c));
    Step s = make_step(c, rng);
    const HostTensor ref = cpu_reference(s);
    Result<DeviceTensor> staging = DeviceTensor::empty(DType::kBF16, {s.batch, s.width});
    ASSERT_TRUE(staging.ok());
    ASSERT_EQ(cudaMemcpy(staging->tensor.data, s.dqkv.tensor.data, static_cast<size_t>(s.dqkv.tensor.nbytes()),
                         cudaMemcpyDeviceToDevice), cudaSuccess);
    for (int splits : {1, 0}) {
      DeviceTensor kc = s.cache(s.k_cache), vc = s.cache(s.v_cache);
      Result<DeviceTensor> out = DeviceTensor::empty(DType::kBF16, {s.batch, c.hq, c.d});
      ASSERT_TRUE(out.ok() && fill_bytes(out->tensor, 0xff).ok() && fill_bytes(s.dqkv.tensor, 0xff).ok());
      const PagedAttentionArgs pa = s.attn(Tensor{}, kc.tensor, vc.tensor, out->tensor);
      Result<DeviceBuffer> ws = workspace(s.attn(out->tensor, kc.tensor, vc.tensor, out->tensor), splits);
      ASSERT_TRUE(ws.ok() && cudaDeviceSynchronize() == cudaSuccess);
      void* w = ws->data();
      cudaStream_t stream;
      ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
      LateQkv late{static_cast<const uint4*>(staging->tensor.data), static_cast<uint4*>(s.dqkv.tensor.data),
                   s.dqkv.tensor.nbytes() / 16};
      ASSERT_EQ(cuda::launch_pdl(write_qkv_late, dim3(1), dim3(256), 0, stream, late), cudaSuccess);
      const Status st = decode_attention_rope_cuda(s.rope(Tensor{}, Tensor{}, Tensor{}), pa, splits, stream,
                                                   [w](int64_t) -> Result<void*> { return w; });
      EXPECT_TRUE(st.ok()) << st.to_string();
      EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      (void)cudaStreamDestroy(stream);
      const double err = relative_error(ref, out->tensor);
      std::printf("[decode_rope] late qkv %s splits=%d rel err vs cpu %.2e\n", describe(c).c_str(), splits, err);
      EXPECT_LT(err, c.cache == DType::kFp8E4M3 ? 2e-2 : 1e-2);
    }
  }
}

TEST(DecodeRopeAttentionCuda, RejectsWhatItDoesNotCover) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(47);
  Step s = make_step({8, 2, 128, 16, {5, 9}}, rng);
  DeviceTensor kc = s.cache(s.k_cache), vc = s.cache(s.v_cache);
  Result<DeviceTensor> out = DeviceTensor::empty(DType::kBF16, {s.batch, 8, 128});
  ASSERT_TRUE(out.ok());
  const PagedAttentionArgs pa = s.attn(Tensor{}, kc.tensor, vc.tensor, out->tensor);
  // The Hadamard key rotation exists for fp8 caches only.
  RopeKvWriteArgs r = s.rope(Tensor{}, Tensor{}, Tensor{});
  r.hadamard_qk = true;
  EXPECT_EQ(decode_attention_rope_cuda(r, pa, 0, nullptr).code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(decode_attention_rope_supported(DType::kFp8E4M3, 128, 4, true));
  EXPECT_FALSE(decode_attention_rope_supported(DType::kF32, 128, 4, false));
  EXPECT_FALSE(decode_attention_rope_supported(DType::kBF16, 96, 4, false));
  // Two query tokens for one sequence: not a decode step.
  PagedAttentionArgs two = pa;
  std::vector<int32_t> cu = {0, 2};
  DeviceTensor dcu = upload(Tensor::view(cu.data(), DType::kInt32, {2}), DType::kInt32);
  two.cu_seqlens_q = dcu.tensor;
  two.kv_lens = s.dkv.tensor.slice0(0, 1);
  two.block_tables = s.dtables.tensor.slice0(0, 1);
  EXPECT_EQ(decode_attention_rope_cuda(s.rope(Tensor{}, Tensor{}, Tensor{}), two, 0, nullptr).code(),
            StatusCode::kInvalidArgument);
  // No slot mapping: the kernel would not know where the newest key goes.
  r = s.rope(Tensor{}, Tensor{}, Tensor{});
  r.slot_mapping = Tensor{};
  EXPECT_EQ(decode_attention_rope_cuda(r, pa, 0, nullptr).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(cuda_synchronize().ok());
}

}  // namespace
}  // namespace kiln
