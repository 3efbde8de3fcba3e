// MoE grouped expert GEMM: cuBLASLt GEMMs (Gemm::run), one per expert over its contiguous rows of
// the permuted activations, in a loop on one stream or spread over lanes (streams that run at the
// same time). Needs the expert offsets on the host. An fp8 x (quantized per row by the caller,
// e.g. silu_mul_fp8_cuda) goes to Gemm::run_quantized.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"

namespace kiln {

Result<std::vector<int32_t>> moe_offsets_to_host(const Tensor& offsets, CUstream_st* stream) {
  if (offsets.device != Device::kCuda || offsets.dtype != DType::kInt32 || !offsets.is_contiguous())
    return invalid_argument("moe_offsets_to_host: want a contiguous int32 device tensor, got " + offsets.shape_string());
  std::vector<int32_t> host(static_cast<size_t>(offsets.numel()));
  KILN_CUDA_CHECK(cudaMemcpyAsync(host.data(), offsets.data, host.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

namespace {

Status check_args(const MoeGroupedGemmArgs& a) {
  const size_t num_experts = a.weights.size();
  if (a.offsets.size() != num_experts + 1)
    return invalid_argument("moe_grouped_gemm_cuda: " + std::to_string(a.offsets.size()) + " offsets for " +
                            std::to_string(num_experts) + " experts (want experts + 1)");
  if (a.x.ndim != 2 || a.y.ndim != 2 || a.x.shape[0] != a.y.shape[0])
    return invalid_argument("moe_grouped_gemm_cuda: x " + a.x.shape_string() + " and y " + a.y.shape_string() +
                            " must be 2-D with the same rows");
  if (!a.weight_scales.empty() && a.weight_scales.size() != num_experts)
    return invalid_argument("moe_grouped_gemm_cuda: " + std::to_string(a.weight_scales.size()) + " weight scales for " +
                            std::to_string(num_experts) + " experts");
  if (a.x.dtype == DType::kFp8E4M3 && (a.weight_scales.empty() || a.x_scale.numel() != a.x.shape[0]))
    return invalid_argument("moe_grouped_gemm_cuda: fp8 x needs fp8 weights with scales and x_scale [rows]");
  if (a.offsets[0] != 0 || a.offsets[num_experts] != a.x.shape[0])
    return invalid_argument("moe_grouped_gemm_cuda: offsets do not cover the rows of x");
  for (size_t e = 0; e < num_experts; ++e)
    if (a.offsets[e + 1] < a.offsets[e]) return invalid_argument("moe_grouped_gemm_cuda: offsets are not sorted");
  return ok_status();
}

// Expert e's GEMM (it has rows) on gemm and stream.
Status expert_gemm(Gemm& gemm, const MoeGroupedGemmArgs& a, size_t e, CUstream_st* stream) {
  const int64_t begin = a.offsets[e], end = a.offsets[e + 1];
  const Tensor scale = a.weight_scales.empty() ? Tensor{} : a.weight_scales[e];
  const Status st =
      a.x.dtype == DType::kFp8E4M3
          ? gemm.run_quantized({a.x.slice0(begin, end), a.x_scale.slice0(begin, end), a.weights[e], {}, a.y.slice0(begin, end), scale},
                               stream)
          : gemm.run({a.x.slice0(begin, end), a.weights[e], {}, a.y.slice0(begin, end), scale}, stream);
  return st.ok() ? st : st.with_context("expert " + std::to_string(e));
}

}  // namespace

Status moe_grouped_gemm_cuda(Gemm& gemm, const MoeGroupedGemmArgs& a, CUstream_st* stream) {
  KILN_RETURN_IF_ERROR(check_args(a));
  for (size_t e = 0; e < a.weights.size(); ++e)
    if (a.offsets[e + 1] > a.offsets[e]) KILN_RETURN_IF_ERROR(expert_gemm(gemm, a, e, stream));
  return ok_status();
}

Status moe_grouped_gemm_cuda(const MoeGemmLanes& lanes, const MoeGroupedGemmArgs& a) {
  const size_t n_lanes = lanes.gemms.size();
  if (n_lanes == 0 || lanes.streams.size() != n_lanes || lanes.events.size() != n_lanes)
    return invalid_argument("moe_grouped_gemm_cuda: " + std::to_string(n_lanes) + " gemms, " +
                            std::to_string(lanes.streams.size()) + " streams, " + std::to_string(lanes.events.size()) +
                            " events (want the same number, at least 1)");
  for (size_t i = 0; i < n_lanes; ++i)
    if (!lanes.gemms[i] || (i > 0 && (!lanes.streams[i] || !lanes.events[i])))
      return invalid_argument("moe_grouped_gemm_cuda: lane " + std::to_string(i) + " lacks its gemm, stream or event");
  KILN_RETURN_IF_ERROR(check_args(a));
  const std::vector<int> lane = moe_expert_lanes(a.offsets, static_cast<int>(n_lanes));
  std::vector<std::vector<size_t>> queue(n_lanes);  // each lane's experts, in expert order
  for (size_t e = 0; e < lane.size(); ++e)
    if (lane[e] >= 0) queue[static_cast<size_t>(lane[e])].push_back(e);
  CUstream_st* const main = lanes.streams[0];
  bool forked = false;
  for (size_t i = 1; i < n_lanes; ++i) {
    if (queue[i].empty()) continue;
    if (!forked) KILN_CUDA_CHECK(cudaEventRecord(lanes.events[0], main));
    forked = true;
    KILN_CUDA_CHECK(cudaStreamWaitEvent(lanes.streams[i], lanes.events[0], 0));
  }
  // Launched round-robin over the lanes (each lane's first expert, then the second, ...), so that
  // every lane has work while the host is still launching. Every used side lane is joined back into
  // stream 0 even when a GEMM failed, so that no work queued later on stream 0 can overtake it; the
  // first error is returned.
  Status first = ok_status();
  for (size_t r = 0; first.ok(); ++r) {
    bool any = false;
    for (size_t i = 0; i < n_lanes && first.ok(); ++i) {
      if (r >= queue[i].size()) continue;
      any = true;
      first = expert_gemm(*lanes.gemms[i], a, queue[i][r], lanes.streams[i]);
    }
    if (!any) break;
  }
  for (size_t i = 1; i < n_lanes; ++i) {
    if (queue[i].empty()) continue;
    KILN_CUDA_CHECK(cudaEventRecord(lanes.events[i], lanes.streams[i]));
    KILN_CUDA_CHECK(cudaStreamWaitEvent(main, lanes.events[i], 0));
  }
  return first;
}

struct MoeLaneSet::Impl {
  std::vector<Gemm> gemms;  // lanes 1..
  std::vector<Gemm*> gemm_ptrs;
  std::vector<cudaStream_t> streams;  // streams[0] borrowed
  std::vector<cudaEvent_t> events;
  ~Impl() {
    for (size_t i = 1; i < streams.size(); ++i)
      if (streams[i]) cudaStreamDestroy(streams[i]);
    for (cudaEvent_t e : events)
      if (e) cudaEventDestroy(e);
  }
};

MoeLaneSet::MoeLaneSet() = default;
MoeLaneSet::MoeLaneSet(MoeLaneSet&&) noexcept = default;
MoeLaneSet& MoeLaneSet::operator=(MoeLaneSet&&) noexcept = default;
MoeLaneSet::~MoeLaneSet() = default;

Result<MoeLaneSet> MoeLaneSet::create(int lanes, Gemm* gemm0, CUstream_st* stream0) {
  if (lanes < 1 || !gemm0) return invalid_argument("MoeLaneSet: want at least one lane and lane 0's gemm");
  MoeLaneSet set;
  set.impl_ = std::make_unique<Impl>();
  Impl& m = *set.impl_;
  m.gemms.reserve(static_cast<size_t>(lanes - 1));  // gemm_ptrs points into it
  m.gemm_ptrs = {gemm0};
  m.streams = {stream0};
  m.events.assign(static_cast<size_t>(lanes), nullptr);
  for (int i = 0; i < lanes; ++i) {
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&m.events[static_cast<size_t>(i)], cudaEventDisableTiming));
    if (i == 0) continue;
    KILN_ASSIGN_OR_RETURN(Gemm g, Gemm::create());
    m.gemms.push_back(std::move(g));
    m.gemm_ptrs.push_back(&m.gemms.back());
    m.streams.push_back(nullptr);
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&m.streams.back(), cudaStreamNonBlocking));
  }
  return std::move(set);  // Result<MoeLaneSet> from an lvalue: moved
}

int MoeLaneSet::size() const { return impl_ ? static_cast<int>(impl_->gemm_ptrs.size()) : 0; }

MoeGemmLanes MoeLaneSet::view(int n) const {
  if (!impl_) return {};
  const size_t k = static_cast<size_t>(std::clamp(n, 0, size()));
  return {std::span<Gemm* const>(impl_->gemm_ptrs).first(k), std::span<CUstream_st* const>(impl_->streams).first(k),
          std::span<CUevent_st* const>(impl_->events).first(k)};
}

CUstream_st* MoeLaneSet::stream(int i) const { return impl_->streams.at(static_cast<size_t>(i)); }

}  // namespace kiln
