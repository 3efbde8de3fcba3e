// Gemm: the dispatcher (gemm_path) over the decode kernel (skinny_gemm.cu) and cuBLASLt. Row-major
// y[m, n] = x[m, k] @ w[n, k]^T is, in cuBLASLt's column-major terms, D[n, m] = op(A)[n, k] *
// B[k, m] with A = w (k x n, transposed) and B = x (k x m): the "TN" layout, the fastest one and
// the only one for fp8. Plans (descriptors + the heuristic's algorithm) are cached per (shape,
// strides, dtypes, bias, alignment, scale mode). Variants: x bf16, w bf16 | fp8 e4m3 -> y bf16 | f32.
// fp8 above the decode range: x -> fp8 (quantize_fp8_activations_cuda into a workspace owned here;
// per token or per tensor), then e4m3 x e4m3 where cuBLASLt applies the x and weight scales as its
// outer-vector scales and writes y (bias included). A plan cuBLASLt refuses (on H100, cuBLAS 13:
// f32 y with a bias, or with fast accumulation) takes an unscaled GEMM + gemm_epilogue_cuda.
// Not used: the alpha-vector pointer mode (per-channel weight scales as alpha, x per tensor as the
// B scale): cuBLASLt 13 on H100 has no fp8 algorithm for it (CUBLAS_STATUS_NOT_SUPPORTED).
#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include "kiln/core/log.h"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/gemm/gemm_epilogue.h"
#include "kiln/kernels/cuda/gemm/gemm_fp8_activations.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

constexpr GemmCudaVariant kVariants[] = {
    {DType::kBF16, DType::kBF16, DType::kBF16},
    {DType::kBF16, DType::kBF16, DType::kF32},
    {DType::kBF16, DType::kFp8E4M3, DType::kBF16},
    {DType::kBF16, DType::kFp8E4M3, DType::kF32},
};

cudaDataType_t cuda_type(DType t) {
  return t == DType::kF32 ? CUDA_R_32F : t == DType::kFp8E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
}

// How a cuBLASLt plan applies the scales (in cuBLASLt's terms A = w, B = x, D = y^T [n, m]):
//   kNone         bf16: none
//   kFp8OuterVec  A and B outer-vector scales: w_scale [n] and x scale [m] (a per-tensor scale is
//                 broadcast to a vector first: cuBLASLt takes outer vectors on both or neither)
//   kFp8Epilogue  fallback: unscaled; gemm_epilogue_cuda applies the scales and the bias after
enum class ScaleMode { kNone, kFp8OuterVec, kFp8Epilogue };

// The device pointers a scaled plan reads. cuBLASLt's heuristic refuses (status 7) a scale mode
// whose pointer is not set yet, so they are set before it too: the first version of this path
// did not, and concluded that Hopper's cuBLASLt had no outer-vector scales.
struct ScalePointers {
  const void* a_scale = nullptr;  // w side
  const void* b_scale = nullptr;  // x side
  const void* bias = nullptr;
};

constexpr float kOne = 1.0f, kZero = 0.0f;
constexpr int64_t kScaleVecOffset = 64;  // act_scale: [0] the per-tensor x scale, [64, 64 + m) its broadcast

__global__ void broadcast_kernel(float* dst, const float* src, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) dst[i] = src[0];
}

struct PlanKey {
  int64_t m, n, k, ldx, ldw, ldy;
  DType w, y;
  bool bias;
  int align;  // bytes every pointer is aligned to, capped at 256
  ScaleMode scales;
  bool w_per_tensor;
  bool operator==(const PlanKey& o) const {
    return m == o.m && n == o.n && k == o.k && ldx == o.ldx && ldw == o.ldw && ldy == o.ldy && w == o.w && y == o.y &&
           bias == o.bias && align == o.align && scales == o.scales && w_per_tensor == o.w_per_tensor;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    size_t h = 0;
    for (int64_t v : {key.m, key.n, key.k, key.ldx, key.ldw, key.ldy,
                      static_cast<int64_t>(key.y) * 2 + key.bias, static_cast<int64_t>(key.align),
                      static_cast<int64_t>(key.w) * 16 + static_cast<int64_t>(key.scales) * 2 + key.w_per_tensor})
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h;
  }
};

constexpr int kTuneCandidates = 8;
constexpr int kTuneReps = 5;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  cublasLtMatmulAlgo_t candidates[kTuneCandidates]{};  // the heuristic's order
  int num_candidates = 0;                              // 0 once tuned
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  Plan(Plan&& o) noexcept
      : op(o.op), a(o.a), b(o.b), c(o.c), algo(o.algo), num_candidates(o.num_candidates) {
    std::copy(o.candidates, o.candidates + kTuneCandidates, candidates);
    o.op = nullptr;
    o.a = o.b = o.c = nullptr;
  }
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

int pointer_alignment(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && (u % static_cast<uintptr_t>(align)) != 0) align /= 2;
  return align;
}

// What the fp8 path learnt: the scaled plans cuBLASLt refused (they take kFp8Epilogue).
struct Fp8Status {
  int native_refused = 0;
  std::string why;  // the last refusal
};

// Rows of a 2-D device tensor with a contiguous last dimension: the leading dimension.
Result<int64_t> leading_dim(const Tensor& t, DType dtype, const char* name) {
  if (t.device != Device::kCuda || t.ndim != 2 || t.dtype != dtype || (t.strides[1] != 1 && t.shape[1] > 1) ||
      t.strides[0] < t.shape[1])
    return invalid_argument(std::string("gemm: ") + name + " is " + t.shape_string() + ", want a 2-D " +
                            std::string(dtype_name(dtype)) + " cuda tensor with contiguous rows");
  return std::max<int64_t>(t.strides[0], 1);
}

}  // namespace

struct Gemm::Impl {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace;
  GemmOptions options;
  bool autotune = false;
  DeviceBuffer skinny_partials, skinny_counters;
  SkinnyGemmWorkspace skinny;
  // fp8 prefill: x quantized [m, k] fp8, its scales [m] (or [1]) f32, the per-tensor amax word,
  // a per-tensor w_scale broadcast to [n] (outer-vector plans)
  DeviceBuffer act_q, act_scale, act_amax, w_broadcast;
  int64_t generation = 0;  // bumped by reserve_activations when the buffers above move
  Fp8Status fp8;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;
  std::unordered_map<PlanKey, bool, PlanKeyHash> native_refused;  // fp8 keys whose native plan failed
  ~Impl() {
    plans.clear();
    if (handle) cublasLtDestroy(handle);
  }

  // Sets the per-call pointers of a scaled plan (the weights' scales differ per layer of one shape).
  static Status set_pointers(const Plan& p, const PlanKey& key, const ScalePointers& ptrs) {
    if (key.scales == ScaleMode::kFp8OuterVec) {
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ptrs.a_scale,
                                                       sizeof(ptrs.a_scale)));
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &ptrs.b_scale,
                                                       sizeof(ptrs.b_scale)));
    }
    if (key.bias && key.scales != ScaleMode::kFp8Epilogue)
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptrs.bias,
                                                       sizeof(ptrs.bias)));
    return ok_status();
  }

  Result<Plan*> plan_for(const PlanKey& key, const ScalePointers& ptrs = {}) {
    if (auto it = plans.find(key); it != plans.end()) return &it->second;
    Plan p;
    const cudaDataType_t yt = cuda_type(key.y);
    const cudaDataType_t in_t = cuda_type(key.w);  // x is quantized to the weights' type
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    if (key.w == DType::kFp8E4M3) {
      const int8_t fast = options.fp8_fast_accum ? 1 : 0;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
    }
    if (key.scales == ScaleMode::kFp8OuterVec) {
      const cublasLtMatmulMatrixScale_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
    }
    if (key.bias && key.scales != ScaleMode::kFp8Epilogue) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &yt, sizeof(yt)));
    }
    KILN_RETURN_IF_ERROR(set_pointers(p, key, ptrs));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_t, static_cast<uint64_t>(key.k),
                                                 static_cast<uint64_t>(key.n), key.ldw));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_t, static_cast<uint64_t>(key.k),
                                                 static_cast<uint64_t>(key.m), key.ldx));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, yt, static_cast<uint64_t>(key.n),
                                                 static_cast<uint64_t>(key.m), key.ldy));
    cublasLtMatmulPreference_t pref = nullptr;
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = static_cast<uint64_t>(workspace.size());
    const uint32_t align = static_cast<uint32_t>(key.align);
    cublasLtMatmulHeuristicResult_t results[kTuneCandidates]{};
    int found = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, autotune ? kTuneCandidates : 1,
                                          results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    KILN_CUBLAS_CHECK(st);
    if (found == 0)
      return unimplemented("gemm: cuBLASLt has no algorithm for m=" + std::to_string(key.m) + " n=" +
                           std::to_string(key.n) + " k=" + std::to_string(key.k) + " w " +
                           std::string(dtype_name(key.w)));
    p.algo = results[0].algo;
    if (autotune && found > 1) {
      for (int i = 0; i < found; ++i) p.candidates[i] = results[i].algo;
      p.num_candidates = found;
    }
    return &plans.emplace(key, std::move(p)).first->second;
  }

  // a.x is what cuBLASLt multiplies: bf16 x, or fp8 x quantized by run_fp8.
  Status matmul(const Plan& p, const cublasLtMatmulAlgo_t& algo, const LinearArgs& a, cudaStream_t stream) {
    KILN_CUBLAS_CHECK(cublasLtMatmul(handle, p.op, &kOne, a.w.data, p.a, a.x.data, p.b, &kZero, a.y.data, p.c,
                                     a.y.data, p.c, &algo, workspace.data(), static_cast<size_t>(workspace.size()),
                                     stream));
    return ok_status();
  }

  // Times each candidate on the call's own operands (y is rewritten by the real call after) and
  // keeps the fastest. Not while the stream is captured into a graph: then it waits for a later call.
  Status tune(Plan& p, const LinearArgs& a, cudaStream_t stream) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    KILN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return ok_status();
    cudaEvent_t start, stop;
    KILN_CUDA_CHECK(cudaEventCreate(&start));
    KILN_CUDA_CHECK(cudaEventCreate(&stop));
    float best_ms = 0.f;
    for (int i = 0; i < p.num_candidates; ++i) {
      if (!matmul(p, p.candidates[i], a, stream).ok()) continue;  // warm-up; a failing one is skipped
      cudaEventRecord(start, stream);
      for (int r = 0; r < kTuneReps; ++r) (void)matmul(p, p.candidates[i], a, stream);
      cudaEventRecord(stop, stream);
      float ms = 0.f;
      if (cudaEventSynchronize(stop) != cudaSuccess || cudaEventElapsedTime(&ms, start, stop) != cudaSuccess) continue;
      if (best_ms == 0.f || ms < best_ms) { best_ms = ms; p.algo = p.candidates[i]; }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    p.num_candidates = 0;
    KILN_CUDA_CHECK(cudaGetLastError());
    return ok_status();
  }

  // Room for x quantized, its scales (and their broadcast when per tensor), a broadcast per-tensor
  // w_scale: grows on first use of a larger m or n (not while the stream is captured).
  Status reserve_activations(int64_t m, int64_t k, int64_t n_broadcast, cudaStream_t stream) {
    const int64_t q_bytes = ((m * k + 255) / 256) * 256, s_bytes = (kScaleVecOffset + m) * 4, b_bytes = n_broadcast * 4;
    if (act_q.size() >= q_bytes && act_scale.size() >= s_bytes && w_broadcast.size() >= b_bytes && act_amax.size() > 0)
      return ok_status();
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    KILN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone)
      return resource_exhausted("gemm: the fp8 activation workspace must grow to m=" + std::to_string(m) + " k=" +
                                 std::to_string(k) + " while the stream is captured; run this shape once first");
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old buffers may still be in use
    ++generation;  // graphs that captured the old addresses must not be replayed
    log_debug("gemm: fp8 activation workspace grows to m=", m, " k=", k, " (generation ", generation, ")");
    if (act_q.size() < q_bytes) {
      KILN_ASSIGN_OR_RETURN(act_q, DeviceBuffer::alloc(q_bytes));
    }
    if (act_scale.size() < s_bytes) {
      KILN_ASSIGN_OR_RETURN(act_scale, DeviceBuffer::alloc(s_bytes));
    }
    if (w_broadcast.size() < b_bytes) {
      KILN_ASSIGN_OR_RETURN(w_broadcast, DeviceBuffer::alloc(b_bytes));
    }
    if (act_amax.size() == 0) {
      KILN_ASSIGN_OR_RETURN(act_amax, DeviceBuffer::alloc(256));
    }
    return ok_status();
  }

  // One scaled (or unscaled) fp8 GEMM on the quantized x: plan, pointers, tuning, the call.
  Status run_plan(const PlanKey& key, const ScalePointers& ptrs, const LinearArgs& q, cudaStream_t stream) {
    KILN_ASSIGN_OR_RETURN(Plan* p, plan_for(key, ptrs));
    KILN_RETURN_IF_ERROR(set_pointers(*p, key, ptrs));
    if (p->num_candidates > 0) KILN_RETURN_IF_ERROR(tune(*p, q, stream));
    return matmul(*p, p->algo, q, stream);
  }

  // fp8 prefill: x -> fp8 (per token or per tensor), then cuBLASLt e4m3 x e4m3 (key.ldx = k: the
  // quantized copy), scaled by cuBLASLt where it accepts the plan, else by the epilogue kernel.
  Status run_fp8(const LinearArgs& a, PlanKey key, cudaStream_t stream) {
    if (key.k % 16 != 0 || key.ldw % 16 != 0 || key.align < 16)
      return unimplemented("gemm: the fp8 cuBLASLt path needs k and the weight row stride multiples of 16 and "
                           "16-byte aligned pointers (k=" + std::to_string(key.k) + ")");
    const bool x_per_tensor = options.fp8_activations == Fp8Activations::kPerTensor && key.m > 1;
    key.scales = ScaleMode::kFp8OuterVec;
    const bool native = options.fp8_native_scales && !native_refused.count(key);
    KILN_RETURN_IF_ERROR(reserve_activations(key.m, key.k, native && key.w_per_tensor ? key.n : 0, stream));
    float* scales = static_cast<float*>(act_scale.data());
    const Tensor xq = Tensor::view(act_q.data(), DType::kFp8E4M3, {key.m, key.k}, Device::kCuda);
    const Tensor xs = Tensor::view(scales, DType::kF32, {x_per_tensor ? 1 : key.m}, Device::kCuda);
    KILN_RETURN_IF_ERROR(
        quantize_fp8_activations_cuda({a.x, xq, xs}, static_cast<uint32_t*>(act_amax.data()), stream));
    LinearArgs q = a;
    q.x = xq;
    if (native) {
      ScalePointers ptrs{a.w_scale.data, scales, key.bias ? a.bias.data : nullptr};
      if (key.w_per_tensor)
        ptrs.a_scale = broadcast(static_cast<float*>(w_broadcast.data()), a.w_scale.ptr<float>(), key.n, stream);
      if (x_per_tensor) ptrs.b_scale = broadcast(scales + kScaleVecOffset, scales, key.m, stream);
      if (!ptrs.a_scale || !ptrs.b_scale) return internal_error("gemm: scale broadcast launch failed");
      const Status st = run_plan(key, ptrs, q, stream);
      if (st.ok()) return st;
      native_refused.emplace(key, true);  // this shape takes the epilogue from now on
      ++fp8.native_refused;
      fp8.why = "m=" + std::to_string(key.m) + " n=" + std::to_string(key.n) + " k=" + std::to_string(key.k) + " y " +
                std::string(dtype_name(key.y)) + (key.bias ? " bias" : "") + ": " + st.to_string();
    }
    key.scales = ScaleMode::kFp8Epilogue;
    KILN_RETURN_IF_ERROR(run_plan(key, {}, q, stream));
    return gemm_epilogue_cuda({a.y, scales, a.w_scale.ptr<float>(), key.w_per_tensor, a.bias, x_per_tensor}, stream);
  }

  // fp8 GEMM on an x quantized by the caller (per row, scales x_scale): run_fp8 without its
  // quantization pass. cuBLASLt reads the scale vector at x_scale: an unaligned one (a slice) is
  // copied to the start of act_scale first.
  Status run_prequantized(const QuantizedLinearArgs& a, PlanKey key, cudaStream_t stream) {
    if (key.k % 16 != 0 || key.ldw % 16 != 0 || key.ldx % 16 != 0 || key.align < 16)
      return unimplemented("gemm: the pre-quantized fp8 path needs k and the row strides multiples of 16 and "
                           "16-byte aligned pointers (k=" + std::to_string(key.k) + ")");
    key.scales = ScaleMode::kFp8OuterVec;
    const bool native = options.fp8_native_scales && !native_refused.count(key);
    const float* x_scale = a.x_scale.ptr<float>();
    if (reinterpret_cast<uintptr_t>(x_scale) % 16 != 0 || (native && key.w_per_tensor)) {
      KILN_RETURN_IF_ERROR(reserve_activations(key.m, 16, native && key.w_per_tensor ? key.n : 0, stream));
      if (reinterpret_cast<uintptr_t>(x_scale) % 16 != 0) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(act_scale.data(), x_scale, static_cast<size_t>(key.m) * 4, cudaMemcpyDeviceToDevice,
                                        stream));
        x_scale = static_cast<const float*>(act_scale.data());
      }
    }
    const LinearArgs q{a.xq, a.w, a.bias, a.y, a.w_scale};
    if (native) {
      ScalePointers ptrs{a.w_scale.data, x_scale, key.bias ? a.bias.data : nullptr};
      if (key.w_per_tensor)
        ptrs.a_scale = broadcast(static_cast<float*>(w_broadcast.data()), a.w_scale.ptr<float>(), key.n, stream);
      if (!ptrs.a_scale) return internal_error("gemm: scale broadcast launch failed");
      const Status st = run_plan(key, ptrs, q, stream);
      if (st.ok()) return st;
      native_refused.emplace(key, true);
      ++fp8.native_refused;
      fp8.why = "m=" + std::to_string(key.m) + " n=" + std::to_string(key.n) + " k=" + std::to_string(key.k) +
                " (pre-quantized x): " + st.to_string();
    }
    key.scales = ScaleMode::kFp8Epilogue;
    KILN_RETURN_IF_ERROR(run_plan(key, {}, q, stream));
    return gemm_epilogue_cuda({a.y, x_scale, a.w_scale.ptr<float>(), key.w_per_tensor, a.bias, false}, stream);
  }

  // dst[0, n) = src[0] on the stream; nullptr if the launch failed.
  static const float* broadcast(float* dst, const float* src, int64_t n, cudaStream_t stream) {
    broadcast_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(dst, src, n);
    return cudaGetLastError() == cudaSuccess ? dst : nullptr;
  }
};

std::span<const GemmCudaVariant> gemm_cuda_variants() { return kVariants; }

Status Gemm::run_quantized(const QuantizedLinearArgs& a, CUstream_st* stream) {
  if (a.y.dtype != DType::kBF16 && a.y.dtype != DType::kF32)
    return unimplemented("gemm run_quantized: y " + std::string(dtype_name(a.y.dtype)) + " (supported: bf16, f32)");
  KILN_ASSIGN_OR_RETURN(const int64_t ldx, leading_dim(a.xq, DType::kFp8E4M3, "xq"));
  KILN_ASSIGN_OR_RETURN(const int64_t ldw, leading_dim(a.w, DType::kFp8E4M3, "w"));
  KILN_ASSIGN_OR_RETURN(const int64_t ldy, leading_dim(a.y, a.y.dtype, "y"));
  const int64_t m = a.xq.shape[0], k = a.xq.shape[1], n = a.w.shape[0];
  if (a.w.shape[1] != k || a.y.shape[0] != m || a.y.shape[1] != n)
    return invalid_argument("gemm run_quantized: shape mismatch xq " + a.xq.shape_string() + ", w " + a.w.shape_string() +
                            ", y " + a.y.shape_string());
  if (a.x_scale.device != Device::kCuda || a.x_scale.dtype != DType::kF32 || a.x_scale.numel() != m ||
      !a.x_scale.is_contiguous())
    return invalid_argument("gemm run_quantized: x_scale " + a.x_scale.shape_string() + ", want [" + std::to_string(m) +
                            "] f32 cuda");
  if (a.w_scale.empty() || a.w_scale.device != Device::kCuda || a.w_scale.dtype != DType::kF32 ||
      !a.w_scale.is_contiguous() || (a.w_scale.numel() != n && a.w_scale.numel() != 1))
    return invalid_argument("gemm run_quantized: w_scale must be [" + std::to_string(n) + "] or [1] f32 cuda");
  const bool bias = !a.bias.empty();
  if (bias && (a.bias.device != Device::kCuda || a.bias.dtype != a.y.dtype || a.bias.numel() != n || !a.bias.is_contiguous()))
    return invalid_argument("gemm run_quantized: bias " + a.bias.shape_string() + ", want [" + std::to_string(n) + "] " +
                            std::string(dtype_name(a.y.dtype)) + " cuda");
  if (m == 0 || n == 0) return ok_status();
  if (k == 0) return unimplemented("gemm: k == 0");
  // Decode sizes whose decode-kernel row quantizes x per token itself: that row, without its pre-pass.
  if (gemm_path(impl_->options, m, DType::kFp8E4M3, n * k) == GemmPath::kSkinny &&
      skinny_gemm_quantizes_x(DType::kFp8E4M3, a.y.dtype, m, n) && (m == 1 || ldx == k)) {
    const SkinnyXq xq{static_cast<const uint8_t*>(a.xq.data), a.x_scale.ptr<float>()};
    const Status st = skinny_gemm_cuda({a.xq, a.w, a.bias, a.y, a.w_scale}, impl_->skinny, stream, {}, nullptr, &xq);
    if (st.code() != StatusCode::kUnimplemented) return st;  // (else: cuBLASLt below)
  }
  int align = std::min({pointer_alignment(a.xq.data), pointer_alignment(a.w.data), pointer_alignment(a.y.data)});
  if (bias) align = std::min(align, pointer_alignment(a.bias.data));
  return impl_->run_prequantized(a, PlanKey{m, n, k, ldx, ldw, ldy, DType::kFp8E4M3, a.y.dtype, bias, align,
                                            ScaleMode::kFp8Epilogue, a.w_scale.numel() == 1 && n != 1}, stream);
}

Status Gemm::run_swiglu(const LinearArgs& a, CUstream_st* stream) {
  if (a.x.dtype != DType::kBF16 || a.y.dtype != DType::kBF16 || (a.w.dtype != DType::kBF16 && a.w.dtype != DType::kFp8E4M3))
    return unimplemented("gemm run_swiglu: want x bf16, w bf16 | fp8_e4m3, y bf16");
  if (a.x.ndim != 2 || a.w.ndim != 2 || a.y.ndim != 2 || a.w.shape[1] != a.x.shape[1] || a.y.shape[0] != a.x.shape[0] ||
      a.w.shape[0] != 2 * a.y.shape[1])
    return invalid_argument("gemm run_swiglu: want x [m, k], w [2I, k], y [m, I]; got x " + a.x.shape_string() + ", w " +
                            a.w.shape_string() + ", y " + a.y.shape_string());
  for (const auto& [t, name] : {std::pair{&a.x, "x"}, std::pair{&a.w, "w"}, std::pair{&a.y, "y"}})
    KILN_RETURN_IF_ERROR(leading_dim(*t, t->dtype, name).status());
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  if (!fp8 && !a.w_scale.empty()) return invalid_argument("gemm run_swiglu: w_scale is only for fp8 weights");
  if (fp8 && !a.w_scale.empty() && !a.w_scale.is_contiguous())
    return invalid_argument("gemm run_swiglu: w_scale must be contiguous, got " + a.w_scale.shape_string());
  const int64_t m = a.x.shape[0], n = a.w.shape[0], k = a.x.shape[1];
  if (m == 0 || n == 0) return ok_status();
  if (k == 0) return unimplemented("gemm run_swiglu: k == 0");
  if (gemm_path(impl_->options, m, a.w.dtype, n * k * (fp8 ? 1 : 2)) != GemmPath::kSkinny)
    return unimplemented("gemm run_swiglu: m = " + std::to_string(m) + " is past the decode kernel");
  SkinnyGemmConfig cfg;  // (skinny_gemm_cuda checks the arguments the decode kernel needs)
  cfg.swiglu = true;
  return skinny_gemm_cuda(a, impl_->skinny, stream, cfg);
}

GemmPath gemm_path(const GemmOptions& options, int64_t m, DType w, int64_t w_bytes) {
  if (w == DType::kFp8E4M3) {
    const int64_t max_m = w_bytes >= kGemmSkinnyLargeFp8Bytes && options.skinny_max_m_fp8 > 0
                              ? std::max(options.skinny_max_m_fp8, options.skinny_max_m_fp8_large)
                              : options.skinny_max_m_fp8;
    return m <= max_m ? GemmPath::kSkinny : GemmPath::kCublasFp8;
  }
  return m <= options.skinny_max_m_bf16 ? GemmPath::kSkinny : GemmPath::kCublasBf16;
}

bool Gemm::quantizes_x_per_token(int64_t m, const Tensor& w, DType y) const {
  if (w.dtype != DType::kFp8E4M3 || w.ndim != 2) return false;
  switch (gemm_path(impl_->options, m, w.dtype, w.numel())) {
    case GemmPath::kSkinny: return skinny_gemm_quantizes_x(w.dtype, y, m, w.shape[0]);
    case GemmPath::kCublasFp8: return impl_->options.fp8_activations == Fp8Activations::kPerToken;
    default: return false;
  }
}

Gemm::Gemm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gemm::Gemm(Gemm&&) noexcept = default;
Gemm& Gemm::operator=(Gemm&&) noexcept = default;
Gemm::~Gemm() = default;

Result<Gemm> Gemm::create(const GemmOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->autotune = options.autotune;
  KILN_CUBLAS_CHECK(cublasLtCreate(&impl->handle));
  KILN_ASSIGN_OR_RETURN(impl->workspace, DeviceBuffer::alloc(options.workspace_bytes));
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&impl->skinny.num_sms, cudaDevAttrMultiProcessorCount, device));
  impl->skinny.pdl = options.skinny_pdl;
  if (options.skinny_workspace_bytes > 0) {
    constexpr int64_t kCounters = 8192;  // row blocks of 128+ weight rows: n up to 1M with split K
    KILN_ASSIGN_OR_RETURN(impl->skinny_partials, DeviceBuffer::alloc(options.skinny_workspace_bytes));
    KILN_ASSIGN_OR_RETURN(impl->skinny_counters, DeviceBuffer::alloc(kCounters * static_cast<int64_t>(sizeof(int))));
    KILN_CUDA_CHECK(cudaMemset(impl->skinny_counters.data(), 0, kCounters * sizeof(int)));
    impl->skinny.partials = static_cast<float*>(impl->skinny_partials.data());
    impl->skinny.partial_floats = options.skinny_workspace_bytes / static_cast<int64_t>(sizeof(float));
    impl->skinny.counters = static_cast<int*>(impl->skinny_counters.data());
    impl->skinny.num_counters = kCounters;
  }
  return Gemm(std::move(impl));
}

int64_t Gemm::cached_plans() const { return static_cast<int64_t>(impl_->plans.size()); }
int64_t Gemm::workspace_generation() const { return impl_->generation; }

std::string Gemm::fp8_prefill_scales() const {
  int outer = 0, epilogue = 0;
  for (const auto& [key, plan] : impl_->plans) {
    outer += key.scales == ScaleMode::kFp8OuterVec;
    epilogue += key.scales == ScaleMode::kFp8Epilogue;
  }
  std::string s = std::to_string(outer) + " shapes with cuBLASLt outer-vector scales, " + std::to_string(epilogue) +
                  " with the epilogue kernel";
  if (impl_->fp8.native_refused > 0)
    s += " (cuBLASLt refused " + std::to_string(impl_->fp8.native_refused) + " scaled plans; the last: " +
         impl_->fp8.why + ")";
  return s;
}

Status Gemm::run(const LinearArgs& a, CUstream_st* stream) {
  const GemmCudaVariant* variant = nullptr;
  for (const auto& v : kVariants)
    if (v.x == a.x.dtype && v.w == a.w.dtype && v.y == a.y.dtype) variant = &v;
  if (!variant) {
    std::string supported;
    for (const auto& v : kVariants)
      supported += std::string(supported.empty() ? "" : ", ") + std::string(dtype_name(v.x)) + " x " +
                   std::string(dtype_name(v.w)) + " -> " + std::string(dtype_name(v.y));
    return unimplemented("gemm: " + std::string(dtype_name(a.x.dtype)) + " x " + std::string(dtype_name(a.w.dtype)) +
                         " -> " + std::string(dtype_name(a.y.dtype)) + " (supported: " + supported + ")");
  }
  KILN_ASSIGN_OR_RETURN(const int64_t ldx, leading_dim(a.x, variant->x, "x"));
  KILN_ASSIGN_OR_RETURN(const int64_t ldw, leading_dim(a.w, variant->w, "w"));
  KILN_ASSIGN_OR_RETURN(const int64_t ldy, leading_dim(a.y, variant->y, "y"));
  const int64_t m = a.x.shape[0], k = a.x.shape[1], n = a.w.shape[0];
  if (a.w.shape[1] != k || a.y.shape[0] != m || a.y.shape[1] != n)
    return invalid_argument("gemm: shape mismatch x " + a.x.shape_string() + ", w " + a.w.shape_string() + ", y " +
                            a.y.shape_string());
  const bool bias = !a.bias.empty();
  if (bias && (a.bias.device != Device::kCuda || a.bias.dtype != variant->y || a.bias.numel() != n ||
               !a.bias.is_contiguous()))
    return invalid_argument("gemm: bias " + a.bias.shape_string() + ", want [" + std::to_string(n) + "] " +
                            std::string(dtype_name(variant->y)) + " cuda");
  const bool fp8 = variant->w == DType::kFp8E4M3;
  if (fp8 && (a.w_scale.empty() || a.w_scale.device != Device::kCuda || a.w_scale.dtype != DType::kF32 ||
              !a.w_scale.is_contiguous() || (a.w_scale.numel() != n && a.w_scale.numel() != 1)))
    return invalid_argument("gemm: fp8 weights need w_scale [" + std::to_string(n) + "] or [1] f32 cuda, got " +
                            (a.w_scale.empty() ? std::string("none") : a.w_scale.shape_string()));
  if (!fp8 && !a.w_scale.empty()) return invalid_argument("gemm: w_scale is only for fp8 weights");
  if (m == 0 || n == 0) return ok_status();
  if (k == 0) return unimplemented("gemm: k == 0");
  const GemmPath path = gemm_path(impl_->options, m, variant->w, n * k * (fp8 ? 1 : 2));
  if (path == GemmPath::kSkinny) {
    const Status ok = skinny_gemm_check(a);
    if (ok.ok()) return skinny_gemm_cuda(a, impl_->skinny, stream);
    if (fp8 && ok.code() != StatusCode::kUnimplemented) return ok;
    // bf16 shapes the decode kernel does not take go to cuBLASLt; fp8 ones try the fp8 path.
  }
  int align = std::min({pointer_alignment(a.x.data), pointer_alignment(a.w.data), pointer_alignment(a.y.data)});
  if (bias) align = std::min(align, pointer_alignment(a.bias.data));
  if (fp8) return impl_->run_fp8(a, PlanKey{m, n, k, k, ldw, ldy, DType::kFp8E4M3, variant->y, bias, align,
                                             ScaleMode::kFp8Epilogue, a.w_scale.numel() == 1 && n != 1}, stream);
  const PlanKey key{m, n, k, ldx, ldw, ldy, DType::kBF16, variant->y, bias, align, ScaleMode::kNone, false};
  KILN_ASSIGN_OR_RETURN(Plan* plan, impl_->plan_for(key));
  if (bias) {
    const void* bias_ptr = a.bias.data;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                                     sizeof(bias_ptr)));
  }
  if (plan->num_candidates > 0) KILN_RETURN_IF_ERROR(impl_->tune(*plan, a, stream));
  return impl_->matmul(*plan, plan->algo, a, stream);
}

}  // namespace kiln
