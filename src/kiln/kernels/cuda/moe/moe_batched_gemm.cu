// MoeBatchedGemm (kernels/moe_cuda.h): the experts' fp8 GEMMs as one cuBLASLt pointer-array
// batched GEMM. A one-block kernel writes the batch's x and y pointer arrays on the stream (so the
// host never writes memory the GPU may still read); the weights' pointer array is the layer's
// expert_ptrs table. Plans are keyed by (rows_per_expert, n, k, experts); each times the
// heuristic's candidates on its first call and keeps the fastest.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "kiln/core/log.h"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/moe_cuda.h"

namespace kiln {
namespace {

constexpr int kMaxExperts = 256;
constexpr int kCandidates = 8;
constexpr int kTuneReps = 3;
constexpr int64_t kWorkspaceBytes = 32 << 20;


// out[0, experts): x_e, out[experts, 2 experts): y_e.
struct PtrParams {
  const uint8_t* x;
  uint8_t* y;
  int64_t x_row_bytes, y_expert_bytes, rows_per_expert;
  const void** out;
  int experts, x_padded;
  int32_t offsets[kMaxExperts + 1];
};

__global__ void batched_ptrs_kernel(const __grid_constant__ PtrParams p) {
  const int e = threadIdx.x;
  if (e >= p.experts) return;
  const int64_t row = p.x_padded ? e * p.rows_per_expert : p.offsets[e];
  p.out[e] = p.x + row * p.x_row_bytes;
  p.out[p.experts + e] = p.y + e * p.y_expert_bytes;
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t candidates[kCandidates]{};
  int num_candidates = 0;
  cublasLtMatmulAlgo_t chosen{};  // candidates[0] until tuned, or the bucket's tuned algorithm
  bool tuned = false;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

Status check_args(const MoeBatchedGemmArgs& a) {
  const int64_t e = a.expert_ptrs.numel(), k = a.x.ndim == 2 ? a.x.shape[1] : 0, rpe = a.rows_per_expert;
  if (a.x.device != Device::kCuda || a.x.ndim != 2 || a.x.dtype != DType::kFp8E4M3 || !a.x.is_contiguous())
    return invalid_argument("MoeBatchedGemm: x " + a.x.shape_string() + " (want contiguous fp8 e4m3 [rows, k] on the device)");
  if (a.expert_ptrs.device != Device::kCuda || a.expert_ptrs.dtype != DType::kInt64 || e < 1 || e > kMaxExperts)
    return invalid_argument("MoeBatchedGemm: expert_ptrs " + a.expert_ptrs.shape_string() +
                            " (want [experts] int64 on the device, 1 to 256 experts)");
  if (static_cast<int64_t>(a.offsets.size()) != e + 1 || a.offsets[0] != 0)
    return invalid_argument("MoeBatchedGemm: " + std::to_string(a.offsets.size()) + " offsets for " + std::to_string(e) +
                            " experts (want experts + 1, from 0)");
  if (a.y.device != Device::kCuda || a.y.dtype != DType::kBF16 || a.y.ndim != 2 || !a.y.is_contiguous() ||
      a.y.shape[0] != e * rpe || a.y.shape[1] != a.n)
    return invalid_argument("MoeBatchedGemm: y " + a.y.shape_string() + " (want contiguous bf16 [experts * " +
                            std::to_string(rpe) + ", " + std::to_string(a.n) + "])");
  for (int64_t i = 0; i < e; ++i) {
    const int64_t rows = a.offsets[i + 1] - a.offsets[i];
    if (rows < 0 || rows > rpe)
      return invalid_argument("MoeBatchedGemm: expert " + std::to_string(i) + " has " + std::to_string(rows) +
                              " rows (want 0 to rows_per_expert " + std::to_string(rpe) + ")");
  }
  const int64_t need = a.x_padded ? e * rpe : a.offsets[e - 1] + rpe;
  if (a.x.shape[0] < need)
    return invalid_argument("MoeBatchedGemm: x has " + std::to_string(a.x.shape[0]) + " rows, the last expert reads to row " +
                            std::to_string(need));
  if (k % 16 != 0 || a.n % 16 != 0 || rpe < 1 || rpe > 0x7fffffff)
    return unimplemented("MoeBatchedGemm: n " + std::to_string(a.n) + ", k " + std::to_string(k) +
                         " (want multiples of 16) and rows_per_expert " + std::to_string(rpe));
  return ok_status();
}

// Plans of rows_per_expert in one bucket (32, 48, 64, 96, 128, 192, ...: steps of 4/3 and 3/2)
// share the algorithm the first of them timed fastest: each step's routing gives another
// rows_per_expert, and timing 8 candidates costs tens of ms at prefill sizes.
int64_t tune_bucket(int64_t m) {
  int64_t b = 32;
  while (b < m) b = b % 3 == 0 ? b / 3 * 4 : b / 2 * 3;
  return b;
}

}  // namespace

int64_t moe_batched_rows_per_expert(int64_t max_rows) {
  return std::max<int64_t>(1, (max_rows + kMoeBatchedRowStep - 1) / kMoeBatchedRowStep) * kMoeBatchedRowStep;
}

struct MoeBatchedGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace, ptrs;  // ptrs: [2 * kMaxExperts] device pointers (x_e, y_e)
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, Plan> plans;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, cublasLtMatmulAlgo_t> bucket_algos;  // (tune_bucket(m), n, k, e)
  ~Impl() {
    plans.clear();
    if (handle) cublasLtDestroy(handle);
  }

  Result<Plan*> plan_for(int64_t m, int64_t n, int64_t k, int64_t e) {
    const auto key = std::make_tuple(m, n, k, e);
    if (auto it = plans.find(key); it != plans.end()) return &it->second;
    Plan& p = plans[key];
    auto fail = [&](Status st) {
      plans.erase(key);
      return st;
    };
    // y^T [n, m] = W [n, k] (stored [k, n] column-major, transposed) x x^T [k, m], per expert.
    auto build = [&]() -> Status {
      KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
      const int8_t fast = 1;  // as Gemm's fp8 plans (GemmOptions::fp8_fast_accum's default)
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, k, n, k));
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, k, m, k));
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, n, m, n));
      const int32_t batch = static_cast<int32_t>(e);
      const uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
      for (cublasLtMatrixLayout_t l : {p.a, p.b, p.c}) {
        KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)));
        KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode, sizeof(mode)));
      }
      cublasLtMatmulPreference_t pref = nullptr;
      KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const uint64_t ws = static_cast<uint64_t>(workspace.size());
      cublasLtMatmulHeuristicResult_t results[kCandidates]{};
      cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, kCandidates, results, &p.num_candidates);
      cublasLtMatmulPreferenceDestroy(pref);
      KILN_CUBLAS_CHECK(st);
      if (p.num_candidates == 0)
        return unimplemented("MoeBatchedGemm: cuBLASLt has no algorithm for " + std::to_string(e) + " experts of m=" +
                             std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
      for (int i = 0; i < p.num_candidates; ++i) p.candidates[i] = results[i].algo;
      p.chosen = p.candidates[0];
      return ok_status();
    };
    if (Status st = build(); !st.ok()) return fail(st);
    return &p;
  }

  Status matmul(const Plan& p, const cublasLtMatmulAlgo_t& algo, const void* w_ptrs, int64_t e, cudaStream_t stream) {
    void** arr = static_cast<void**>(ptrs.data());
    static const float kOne = 1.0f, kZero = 0.0f;
    KILN_CUBLAS_CHECK(cublasLtMatmul(handle, p.op, &kOne, w_ptrs, p.a, arr, p.b, &kZero, arr + e, p.c, arr + e, p.c,
                                 &algo, workspace.data(), static_cast<size_t>(workspace.size()), stream));
    return ok_status();
  }

  // The bucket's algorithm if it has one that runs this plan; else times each candidate on the
  // call's operands (y is rewritten by the real call after) and keeps the fastest for the bucket.
  Status tune(Plan& p, int64_t m, int64_t n, int64_t k, const void* w_ptrs, int64_t e, cudaStream_t stream) {
    const auto bucket = std::make_tuple(tune_bucket(m), n, k, e);
    if (auto it = bucket_algos.find(bucket); it != bucket_algos.end()) {
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(handle, p.op, p.a, p.b, p.c, p.c, &it->second, &check) == CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= static_cast<size_t>(workspace.size()))
        p.chosen = it->second;
      p.tuned = true;
      return ok_status();
    }
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    KILN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return ok_status();  // a later uncaptured call tunes
    p.tuned = true;
    if (p.num_candidates < 2) return ok_status();
    int best = 0;
    cudaEvent_t start, stop;
    KILN_CUDA_CHECK(cudaEventCreate(&start));
    KILN_CUDA_CHECK(cudaEventCreate(&stop));
    float best_ms = 0.f;
    for (int i = 0; i < p.num_candidates; ++i) {
      if (!matmul(p, p.candidates[i], w_ptrs, e, stream).ok()) continue;  // warm-up; a failing candidate is skipped
      cudaEventRecord(start, stream);
      for (int r = 0; r < kTuneReps; ++r) (void)matmul(p, p.candidates[i], w_ptrs, e, stream);
      cudaEventRecord(stop, stream);
      float ms = 0.f;
      if (cudaEventSynchronize(stop) != cudaSuccess || cudaEventElapsedTime(&ms, start, stop) != cudaSuccess) continue;
      if (best_ms == 0.f || ms < best_ms) {
        best_ms = ms;
        best = i;
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    KILN_CUDA_CHECK(cudaGetLastError());
    p.chosen = p.candidates[best];
    bucket_algos[bucket] = p.chosen;
    log_debug("MoeBatchedGemm: ", e, " x ", m, " x ", n, " x ", k, ": candidate ", best, " of ", p.num_candidates, " (",
              best_ms * 1000.f / kTuneReps, " us)");
    return ok_status();
  }
};

MoeBatchedGemm::MoeBatchedGemm() = default;
MoeBatchedGemm::MoeBatchedGemm(MoeBatchedGemm&&) noexcept = default;
MoeBatchedGemm& MoeBatchedGemm::operator=(MoeBatchedGemm&&) noexcept = default;
MoeBatchedGemm::~MoeBatchedGemm() = default;

Result<MoeBatchedGemm> MoeBatchedGemm::create() {
  MoeBatchedGemm g;
  g.impl_ = std::make_unique<Impl>();
  KILN_CUBLAS_CHECK(cublasLtCreate(&g.impl_->handle));
  KILN_ASSIGN_OR_RETURN(g.impl_->workspace, DeviceBuffer::alloc(kWorkspaceBytes));
  KILN_ASSIGN_OR_RETURN(g.impl_->ptrs, DeviceBuffer::alloc(2 * kMaxExperts * static_cast<int64_t>(sizeof(void*))));
  return std::move(g);
}

Status MoeBatchedGemm::run(const MoeBatchedGemmArgs& a, CUstream_st* stream) {
  if (!impl_) return invalid_argument("MoeBatchedGemm: not created (MoeBatchedGemm::create)");
  KILN_RETURN_IF_ERROR(check_args(a));
  const int64_t e = a.expert_ptrs.numel(), k = a.x.shape[1];
  if (a.offsets[static_cast<size_t>(e)] == 0) return ok_status();  // no rows
  PtrParams pp{};
  pp.x = static_cast<const uint8_t*>(a.x.data);
  pp.y = static_cast<uint8_t*>(a.y.data);
  pp.x_row_bytes = k;
  pp.y_expert_bytes = a.rows_per_expert * a.n * 2;
  pp.rows_per_expert = a.rows_per_expert;
  pp.out = static_cast<const void**>(impl_->ptrs.data());
  pp.experts = static_cast<int>(e);
  pp.x_padded = a.x_padded ? 1 : 0;
  for (int64_t i = 0; i <= e; ++i) pp.offsets[i] = a.offsets[static_cast<size_t>(i)];
  batched_ptrs_kernel<<<1, kMaxExperts, 0, stream>>>(pp);
  KILN_CUDA_CHECK_LAUNCH();
  KILN_ASSIGN_OR_RETURN(Plan * p, impl_->plan_for(a.rows_per_expert, a.n, k, e));
  if (!p->tuned) KILN_RETURN_IF_ERROR(impl_->tune(*p, a.rows_per_expert, a.n, k, a.expert_ptrs.data, e, stream));
  return impl_->matmul(*p, p->chosen, a.expert_ptrs.data, e, stream);
}

}  // namespace kiln
