// Gemm through cuBLASLt. Row-major y[m, n] = x[m, k] @ w[n, k]^T is, in cuBLASLt's column-major
// terms, D[n, m] = op(A)[n, k] * B[k, m] with A = w (k x n, transposed) and B = x (k x m): the
// "TN" layout, the fastest one. Plans (descriptors + the heuristic's algorithm) are cached per
// (shape, strides, dtypes, bias, alignment). Variants: bf16 x bf16 -> bf16 | f32.
#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"

namespace kiln {
namespace {

constexpr GemmCudaVariant kVariants[] = {
    {DType::kBF16, DType::kBF16, DType::kBF16},
    {DType::kBF16, DType::kBF16, DType::kF32},
};

cudaDataType_t cuda_type(DType t) { return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }

struct PlanKey {
  int64_t m, n, k, ldx, ldw, ldy;
  DType y;
  bool bias;
  int align;  // bytes every pointer is aligned to, capped at 256
  bool operator==(const PlanKey& o) const {
    return m == o.m && n == o.n && k == o.k && ldx == o.ldx && ldw == o.ldw && ldy == o.ldy && y == o.y &&
           bias == o.bias && align == o.align;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    size_t h = 0;
    for (int64_t v : {key.m, key.n, key.k, key.ldx, key.ldw, key.ldy,
                      static_cast<int64_t>(key.y) * 2 + key.bias, static_cast<int64_t>(key.align)})
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
  bool autotune = false;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;
  ~Impl() {
    plans.clear();
    if (handle) cublasLtDestroy(handle);
  }

  Result<Plan*> plan_for(const PlanKey& key) {
    if (auto it = plans.find(key); it != plans.end()) return &it->second;
    Plan p;
    const cudaDataType_t yt = cuda_type(key.y);
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    if (key.bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &yt, sizeof(yt)));
    }
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, static_cast<uint64_t>(key.k),
                                                 static_cast<uint64_t>(key.n), key.ldw));
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, static_cast<uint64_t>(key.k),
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
                           std::to_string(key.n) + " k=" + std::to_string(key.k));
    p.algo = results[0].algo;
    if (autotune && found > 1) {
      for (int i = 0; i < found; ++i) p.candidates[i] = results[i].algo;
      p.num_candidates = found;
    }
    return &plans.emplace(key, std::move(p)).first->second;
  }

  Status matmul(const Plan& p, const cublasLtMatmulAlgo_t& algo, const LinearArgs& a, cudaStream_t stream) {
    const float alpha = 1.0f, beta = 0.0f;
    KILN_CUBLAS_CHECK(cublasLtMatmul(handle, p.op, &alpha, a.w.data, p.a, a.x.data, p.b, &beta, a.y.data, p.c,
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
      if (!matmul(p, p.candidates[i], a, stream).ok()) continue;  // warm-up; a failing candidate is skipped
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
};

std::span<const GemmCudaVariant> gemm_cuda_variants() { return kVariants; }

Gemm::Gemm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gemm::Gemm(Gemm&&) noexcept = default;
Gemm& Gemm::operator=(Gemm&&) noexcept = default;
Gemm::~Gemm() = default;

Result<Gemm> Gemm::create(const GemmOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->autotune = options.autotune;
  KILN_CUBLAS_CHECK(cublasLtCreate(&impl->handle));
  KILN_ASSIGN_OR_RETURN(impl->workspace, DeviceBuffer::alloc(options.workspace_bytes));
  return Gemm(std::move(impl));
}

int64_t Gemm::cached_plans() const { return static_cast<int64_t>(impl_->plans.size()); }

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
  if (m == 0 || n == 0) return ok_status();
  if (k == 0) return unimplemented("gemm: k == 0");
  int align = std::min({pointer_alignment(a.x.data), pointer_alignment(a.w.data), pointer_alignment(a.y.data)});
  if (bias) align = std::min(align, pointer_alignment(a.bias.data));
  const PlanKey key{m, n, k, ldx, ldw, ldy, variant->y, bias, align};
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
