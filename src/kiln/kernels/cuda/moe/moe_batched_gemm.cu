// MoeBatchedGemm (kernels/moe_cuda.h): the experts' fp8 GEMMs as one cuBLASLt pointer-array
// batched GEMM over the entries of a MoeBatchedLayout. A one-block kernel writes the batch's w, x
// and y pointer arrays on the stream from the layout (passed by value) and the layer's expert_ptrs
// table, so the host never writes memory the GPU may still read; another writes the layout's
// tables for the dequant passes. Plans are keyed by (rows_per_entry, n, k, entries); the first
// plan of a (rows_per_entry, n, k) times the heuristic's candidates and later plans of the same
// shape with another number of entries take the winner.
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

constexpr int kCandidates = 8;
constexpr int kTuneReps = 3;
constexpr int64_t kWorkspaceBytes = 32 << 20;

// out[0, n): w_i, out[n, 2n): x_i, out[2n, 3n): y_i for the n entries.
struct PtrParams {
  const int64_t* expert_ptrs;
  const uint8_t* x;
  uint8_t* y;
  int64_t x_row_bytes, y_entry_bytes, rows_per_entry;
  const void** out;
  int entries, x_padded;
  int16_t expert[kMoeBatchedMaxEntries];
  int32_t begin[kMoeBatchedMaxEntries];
};

__global__ void batched_ptrs_kernel(const __grid_constant__ PtrParams p) {
  const int i = threadIdx.x;
  if (i >= p.entries) return;
  const int64_t row = p.x_padded ? i * p.rows_per_entry : p.begin[i];
  p.out[i] = reinterpret_cast<const void*>(p.expert_ptrs[p.expert[i]]);
  p.out[p.entries + i] = p.x + row * p.x_row_bytes;
  p.out[2 * p.entries + i] = p.y + i * p.y_entry_bytes;
}

// The layout's tables: entries [n, 3] (expert, begin, end), padded_rows [rows] (-1 where no entry).
struct TableParams {
  int32_t* entries;
  int32_t* padded_rows;
  int64_t rows, rows_per_entry;
  int n;
  int16_t expert[kMoeBatchedMaxEntries];
  int32_t begin[kMoeBatchedMaxEntries], end[kMoeBatchedMaxEntries];
};

__global__ void batched_tables_kernel(const __grid_constant__ TableParams p) {
  for (int64_t r = threadIdx.x; r < p.rows; r += blockDim.x) p.padded_rows[r] = -1;
  __syncthreads();
  for (int i = threadIdx.x; i < p.n; i += blockDim.x) {
    p.entries[3 * i] = p.expert[i];
    p.entries[3 * i + 1] = p.begin[i];
    p.entries[3 * i + 2] = p.end[i];
  }
  for (int i = 0; i < p.n; ++i)
    for (int r = p.begin[i] + threadIdx.x; r < p.end[i]; r += blockDim.x)
      p.padded_rows[r] = static_cast<int32_t>(i * p.rows_per_entry + (r - p.begin[i]));
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

Status check_layout(const MoeBatchedLayout& l, int64_t experts) {
  const int64_t n = l.entries();
  if (n < 1 || n > kMoeBatchedMaxEntries || l.rows_per_entry < 1 || static_cast<int64_t>(l.begin.size()) != n ||
      static_cast<int64_t>(l.end.size()) != n)
    return invalid_argument("MoeBatchedGemm: a layout of " + std::to_string(n) + " entries of " +
                            std::to_string(l.rows_per_entry) + " rows (want 1 to 256 entries, begin and end for each)");
  for (int64_t i = 0; i < n; ++i)
    if (l.expert[i] < 0 || l.expert[i] >= experts || l.begin[i] < 0 || l.end[i] < l.begin[i] ||
        l.end[i] - l.begin[i] > l.rows_per_entry)
      return invalid_argument("MoeBatchedGemm: layout entry " + std::to_string(i) + " (expert " + std::to_string(l.expert[i]) +
                              ", rows " + std::to_string(l.begin[i]) + ".." + std::to_string(l.end[i]) + ") does not fit");
  return ok_status();
}

Status check_args(const MoeBatchedGemmArgs& a) {
  const int64_t e = a.expert_ptrs.numel(), k = a.x.ndim == 2 ? a.x.shape[1] : 0;
  if (a.x.device != Device::kCuda || a.x.ndim != 2 || a.x.dtype != DType::kFp8E4M3 || !a.x.is_contiguous())
    return invalid_argument("MoeBatchedGemm: x " + a.x.shape_string() + " (want contiguous fp8 e4m3 [rows, k] on the device)");
  if (a.expert_ptrs.device != Device::kCuda || a.expert_ptrs.dtype != DType::kInt64 || e < 1 || e > 32767)
    return invalid_argument("MoeBatchedGemm: expert_ptrs " + a.expert_ptrs.shape_string() + " (want [experts] int64 on the device)");
  if (!a.layout) return invalid_argument("MoeBatchedGemm: no layout");
  const MoeBatchedLayout& l = *a.layout;
  KILN_RETURN_IF_ERROR(check_layout(l, e));
  if (a.y.device != Device::kCuda || a.y.dtype != DType::kBF16 || a.y.ndim != 2 || !a.y.is_contiguous() ||
      a.y.shape[0] != l.padded_rows() || a.y.shape[1] != a.n)
    return invalid_argument("MoeBatchedGemm: y " + a.y.shape_string() + " (want contiguous bf16 [" +
                            std::to_string(l.padded_rows()) + ", " + std::to_string(a.n) + "])");
  int64_t need = l.padded_rows();
  if (!a.x_padded) {
    need = 0;
    for (int32_t b : l.begin) need = std::max<int64_t>(need, b + l.rows_per_entry);
  }
  if (a.x.shape[0] < need)
    return invalid_argument("MoeBatchedGemm: x has " + std::to_string(a.x.shape[0]) + " rows, an entry reads to row " +
                            std::to_string(need));
  if (k % 16 != 0 || a.n % 16 != 0)
    return unimplemented("MoeBatchedGemm: n " + std::to_string(a.n) + ", k " + std::to_string(k) + " (want multiples of 16)");
  return ok_status();
}

}  // namespace

struct MoeBatchedGemm::Impl {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace, ptrs, tables;  // ptrs: [3 * kMoeBatchedMaxEntries] (w_i, x_i, y_i); tables: MoeBatchedTables
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, Plan> plans;
  std::map<std::tuple<int64_t, int64_t, int64_t>, cublasLtMatmulAlgo_t> shape_algos;  // (rows_per_entry, n, k)
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
    // y^T [n, m] = W [n, k] (stored [k, n] column-major, transposed) x x^T [k, m], per entry.
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

  Status matmul(const Plan& p, const cublasLtMatmulAlgo_t& algo, int64_t e, cudaStream_t stream) {
    void** arr = static_cast<void**>(ptrs.data());
    static const float kOne = 1.0f, kZero = 0.0f;
    KILN_CUBLAS_CHECK(cublasLtMatmul(handle, p.op, &kOne, arr, p.a, arr + e, p.b, &kZero, arr + 2 * e, p.c, arr + 2 * e, p.c,
                                 &algo, workspace.data(), static_cast<size_t>(workspace.size()), stream));
    return ok_status();
  }

  // The shape's algorithm if it has one that runs this plan; else times each candidate on the
  // call's operands (y is rewritten by the real call after) and keeps the fastest for the shape.
  // (Sharing one algorithm across row counts lost: 576 rows on the one timed at 768 ran gate_up in
  // 1021 us against 813 for its own, H100, 2026-11-24.)
  Status tune(Plan& p, int64_t m, int64_t n, int64_t k, int64_t e, cudaStream_t stream) {
    const auto shape = std::make_tuple(m, n, k);  // any number of entries
    if (auto it = shape_algos.find(shape); it != shape_algos.end()) {
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
      if (!matmul(p, p.candidates[i], e, stream).ok()) continue;  // warm-up; a failing candidate is skipped
      cudaEventRecord(start, stream);
      for (int r = 0; r < kTuneReps; ++r) (void)matmul(p, p.candidates[i], e, stream);
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
    shape_algos[shape] = p.chosen;
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
  KILN_ASSIGN_OR_RETURN(g.impl_->ptrs, DeviceBuffer::alloc(3 * kMoeBatchedMaxEntries * static_cast<int64_t>(sizeof(void*))));
  return std::move(g);
}

Result<MoeBatchedTables> MoeBatchedGemm::upload_layout(const MoeBatchedLayout& l, int64_t rows, CUstream_st* stream) {
  if (!impl_) return invalid_argument("MoeBatchedGemm: not created (MoeBatchedGemm::create)");
  KILN_RETURN_IF_ERROR(check_layout(l, 32767));
  for (int32_t e : l.end)
    if (e > rows) return invalid_argument("MoeBatchedGemm: a layout entry ends at row " + std::to_string(e) + " of " + std::to_string(rows));
  const int64_t n = l.entries(), bytes = (3 * n + rows) * 4;
  if (impl_->tables.size() < bytes) {
    impl_->tables = DeviceBuffer{};
    KILN_ASSIGN_OR_RETURN(impl_->tables, DeviceBuffer::alloc(std::max<int64_t>(bytes, 1 << 16)));
  }
  TableParams tp{};
  tp.entries = static_cast<int32_t*>(impl_->tables.data());
  tp.padded_rows = tp.entries + 3 * n;
  tp.rows = rows;
  tp.rows_per_entry = l.rows_per_entry;
  tp.n = static_cast<int>(n);
  for (int64_t i = 0; i < n; ++i) {
    tp.expert[i] = static_cast<int16_t>(l.expert[i]);
    tp.begin[i] = l.begin[i];
    tp.end[i] = l.end[i];
  }
  batched_tables_kernel<<<1, 1024, 0, stream>>>(tp);
  KILN_CUDA_CHECK_LAUNCH();
  return MoeBatchedTables{Tensor::view(tp.entries, DType::kInt32, {n, 3}, Device::kCuda),
                          Tensor::view(tp.padded_rows, DType::kInt32, {rows}, Device::kCuda)};
}

Status MoeBatchedGemm::run(const MoeBatchedGemmArgs& a, CUstream_st* stream) {
  if (!impl_) return invalid_argument("MoeBatchedGemm: not created (MoeBatchedGemm::create)");
  KILN_RETURN_IF_ERROR(check_args(a));
  const MoeBatchedLayout& l = *a.layout;
  const int64_t n = l.entries(), k = a.x.shape[1];
  PtrParams pp{};
  pp.expert_ptrs = static_cast<const int64_t*>(a.expert_ptrs.data);
  pp.x = static_cast<const uint8_t*>(a.x.data);
  pp.y = static_cast<uint8_t*>(a.y.data);
  pp.x_row_bytes = k;
  pp.y_entry_bytes = l.rows_per_entry * a.n * 2;
  pp.rows_per_entry = l.rows_per_entry;
  pp.out = static_cast<const void**>(impl_->ptrs.data());
  pp.entries = static_cast<int>(n);
  pp.x_padded = a.x_padded ? 1 : 0;
  for (int64_t i = 0; i < n; ++i) {
    pp.expert[i] = static_cast<int16_t>(l.expert[i]);
    pp.begin[i] = l.begin[i];
  }
  batched_ptrs_kernel<<<1, kMoeBatchedMaxEntries, 0, stream>>>(pp);
  KILN_CUDA_CHECK_LAUNCH();
  KILN_ASSIGN_OR_RETURN(Plan * p, impl_->plan_for(l.rows_per_entry, a.n, k, n));
  if (!p->tuned) KILN_RETURN_IF_ERROR(impl_->tune(*p, l.rows_per_entry, a.n, k, n, stream));
  return impl_->matmul(*p, p->chosen, n, stream);
}

}  // namespace kiln
