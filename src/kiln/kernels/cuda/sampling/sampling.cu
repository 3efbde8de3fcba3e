// CUDA sampling that reproduces sample_cpu exactly.
//   greedy rows (temperature 0 or top_k 1): one block per row, argmax, ties to the lower id.
//   sampled rows: one device-wide radix sort of (row, logit descending) keys with the token ids
//   as values (stable, so equal logits keep the lower id first: sample_cpu's order), then one
//   block per row computes exp((l - max) / T) in parallel (double exp rounded to f32, which
//   matches glibc's expf) and one thread runs the sums in the CPU's sequential order. Those
//   sums stop early, exactly: the values are sorted descending, so once one is below half an
//   ulp of the running sum, neither it nor any later one can change the sum any more.
// Variants: f32 logits.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/sampling_cuda.h"

namespace kiln {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxSortItems = int64_t{1} << 23;  // rows per sort chunk: kMaxSortItems / vocab

constexpr SampleCudaVariant kVariants[] = {
    {DType::kF32},
};

struct RowParams {  // one sampled (non-greedy) row
  float temperature, top_p, min_p;
  int32_t top_k;
  uint64_t seed, step;
  int32_t row;  // batch row
};

// Same bits as sampling_uniform() in kernels/cpu/sampling.cc.
__device__ __forceinline__ float sampling_uniform_device(uint64_t seed, uint64_t step) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + step + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

// Ascending order of the result = descending order of the logits; -0 and +0 tie.
__device__ __forceinline__ uint32_t descending_key(float f) {
  uint32_t u = f == 0.f ? 0u : __float_as_uint(f);
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~ordered;
}
__device__ __forceinline__ float logit_from_key(uint64_t key) {
  const uint32_t ordered = ~static_cast<uint32_t>(key);
  return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered);
}

// Adding any x < half_ulp(s) to s (s >= 0) leaves s unchanged.
__device__ __forceinline__ float half_ulp(float s) {
  return (__uint_as_float(__float_as_uint(s) + 1u) - s) * 0.5f;
}

// The scans below run on one thread, in the CPU's order, 8 values at a time: the next 8 loads
// are in flight while the current 8 are added. They stop early once the largest value of a chunk
// is under half an ulp of the running sum (the threshold only grows, so it is safe to test once
// per chunk; adding a negligible value, as the CPU does, changes nothing).
constexpr int kScanChunk = 8;

struct ScanChunk {
  float v[kScanChunk];
  __device__ __forceinline__ void load(const float* x, int i, int n) {
#pragma unroll
    for (int j = 0; j < kScanChunk; ++j) v[j] = i + j < n ? x[i + j] : 0.f;
  }
};

// fl(...((x[0] + x[1]) + x[2]) ...) over [0, n), x non-increasing and >= 0.
__device__ float sequential_sum(const float* x, int n) {
  float s = 0.f;
  ScanChunk cur, next;
  cur.load(x, 0, n);
  for (int i = 0; i < n; i += kScanChunk) {
    next.load(x, i + kScanChunk, n);
    if (cur.v[0] < half_ulp(s)) break;
#pragma unroll
    for (int j = 0; j < kScanChunk; ++j) s += cur.v[j];  // zeros past n change nothing
    cur = next;
  }
  return s;
}

// The first i in [0, n) whose running sum reaches the bound (cum >= bound when kInclusive,
// bound < cum otherwise), or -1 if none does.
template <bool kInclusive>
__device__ int first_crossing(const float* x, int n, float bound) {
  float cum = 0.f;
  ScanChunk cur, next;
  cur.load(x, 0, n);
  for (int i = 0; i < n; i += kScanChunk) {
    next.load(x, i + kScanChunk, n);
    if (cur.v[0] < half_ulp(cum)) break;  // cum can no longer change: it never gets there
#pragma unroll
    for (int j = 0; j < kScanChunk; ++j) {
      cum += cur.v[j];
      if (kInclusive ? cum >= bound : bound < cum) return i + j < n ? i + j : -1;
    }
    cur = next;
  }
  return -1;
}

struct KeysParams {
  const float* logits;      // [batch, vocab]
  const RowParams* rows;    // [sampled rows]
  uint64_t* keys;           // [chunk rows, vocab]: (chunk row << 32) | descending_key(logit)
  int32_t* ids;             // [chunk rows, vocab]: token id
  int64_t vocab;
  int first;                // first sampled row of this chunk
};

__global__ void __launch_bounds__(kThreads) sample_keys_kernel(const __grid_constant__ KeysParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= p.vocab) return;
  const int r = blockIdx.y;
  const float l = p.logits[p.rows[p.first + r].row * p.vocab + i];
  p.keys[r * p.vocab + i] = (static_cast<uint64_t>(r) << 32) | descending_key(l);
  p.ids[r * p.vocab + i] = static_cast<int32_t>(i);
}

struct GreedyParams {
  const float* logits;  // [batch, vocab]
  const int32_t* rows;  // [greedy rows]
  int32_t* out_ids;     // [batch]
  int64_t vocab;
};

__global__ void __launch_bounds__(kThreads) sample_greedy_kernel(const __grid_constant__ GreedyParams p) {
  __shared__ float best_v[kThreads / 32];
  __shared__ int64_t best_i[kThreads / 32];
  const int row = p.rows[blockIdx.x];
  const float* l = p.logits + row * p.vocab;
  float bv = -INFINITY;
  int64_t bi = p.vocab;
  for (int64_t i = threadIdx.x; i < p.vocab; i += kThreads)
    if (l[i] > bv || bi == p.vocab) { bv = l[i]; bi = i; }  // first occurrence in this thread's stride
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
  }
  if ((threadIdx.x & 31) == 0) { best_v[threadIdx.x >> 5] = bv; best_i[threadIdx.x >> 5] = bi; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w)
      if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) { bv = best_v[w]; bi = best_i[w]; }
    p.out_ids[row] = static_cast<int32_t>(bi);
  }
}

struct RowsParams {
  const RowParams* rows;  // [sampled rows]
  const uint64_t* keys;   // [chunk rows, vocab] sorted
  const int32_t* ids;     // [chunk rows, vocab] sorted with the keys
  float* prob;            // [chunk rows, vocab] scratch
  int32_t* out_ids;       // [batch]
  int64_t vocab;
  int first;
};

__global__ void __launch_bounds__(kThreads) sample_rows_kernel(const __grid_constant__ RowsParams p) {
  __shared__ float s_sum;
  __shared__ int s_keep;
  __shared__ int s_first_fail[kThreads / 32];
  const RowParams rp = p.rows[p.first + blockIdx.x];
  const uint64_t* keys = p.keys + blockIdx.x * p.vocab;
  const int32_t* ids = p.ids + blockIdx.x * p.vocab;
  float* prob = p.prob + blockIdx.x * p.vocab;
  const int keep0 = (rp.top_k > 0 && rp.top_k < p.vocab) ? rp.top_k : static_cast<int>(p.vocab);
  const float mx = logit_from_key(keys[0]);
  for (int i = threadIdx.x; i < keep0; i += kThreads)
    prob[i] = static_cast<float>(exp(static_cast<double>((logit_from_key(keys[i]) - mx) / rp.temperature)));
  __syncthreads();
  if (threadIdx.x == 0) s_sum = sequential_sum(prob, keep0);
  __syncthreads();
  const float sum = s_sum;
  for (int i = threadIdx.x; i < keep0; i += kThreads) prob[i] = prob[i] / sum;
  __syncthreads();
  if (threadIdx.x == 0) {  // top-p: the smallest prefix whose mass reaches top_p
    const int cut = rp.top_p < 1.0f ? first_crossing<true>(prob, keep0, rp.top_p) : -1;
    s_keep = cut >= 0 ? cut + 1 : keep0;
  }
  __syncthreads();
  int keep = s_keep;
  if (rp.min_p > 0.f) {  // first i >= 1 with prob[i] < min_p * prob[0] (as !(>=), like the CPU loop)
    const float floor_p = rp.min_p * prob[0];
    int first_fail = keep;
    for (int i = 1 + threadIdx.x; i < keep; i += kThreads)
      if (!(prob[i] >= floor_p)) { first_fail = i; break; }
    for (int o = 16; o > 0; o >>= 1) first_fail = min(first_fail, __shfl_xor_sync(0xffffffffu, first_fail, o));
    if ((threadIdx.x & 31) == 0) s_first_fail[threadIdx.x >> 5] = first_fail;
    __syncthreads();
    for (int w = 0; w < kThreads / 32; ++w) keep = min(keep, s_first_fail[w]);
  }
  if (threadIdx.x != 0) return;
  const float total = sequential_sum(prob, keep);
  const float u = sampling_uniform_device(rp.seed, rp.step) * total;
  const int at = first_crossing<false>(prob, keep, u);
  p.out_ids[rp.row] = ids[at >= 0 ? at : keep - 1];
}

}  // namespace

struct CudaSampler::Impl {
  DeviceBuffer meta;  // [sampled rows] RowParams, then [greedy rows] int32
  DeviceBuffer keys_in, keys_out, ids_in, ids_out, prob, sort_temp;
  std::vector<char> staging;

  // Grows b to at least `bytes`; work still queued on `stream` may use the old buffer.
  Status reserve(DeviceBuffer& b, int64_t bytes, CUstream_st* stream) {
    if (b.size() >= bytes) return ok_status();
    if (b.data()) KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    b = DeviceBuffer();  // free first: these can be large
    KILN_ASSIGN_OR_RETURN(b, DeviceBuffer::alloc(bytes));
    return ok_status();
  }
};

std::span<const SampleCudaVariant> sample_cuda_variants() { return kVariants; }

CudaSampler::CudaSampler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaSampler::CudaSampler(CudaSampler&&) noexcept = default;
CudaSampler& CudaSampler::operator=(CudaSampler&&) noexcept = default;
CudaSampler::~CudaSampler() = default;

Result<CudaSampler> CudaSampler::create() { return CudaSampler(std::make_unique<Impl>()); }

Status CudaSampler::sample(const SampleArgs& a, CUstream_st* stream) {
  if (std::none_of(std::begin(kVariants), std::end(kVariants), [&](const SampleCudaVariant& v) { return v.logits == a.logits.dtype; }))
    return unimplemented("sample_cuda: logits " + std::string(dtype_name(a.logits.dtype)) + " (supported: f32)");
  if (a.logits.ndim != 2 || a.logits.device != Device::kCuda || !a.logits.is_contiguous())
    return invalid_argument("sample_cuda: want contiguous device logits [batch, vocab], got " + a.logits.shape_string());
  const int64_t batch = a.logits.shape[0], vocab = a.logits.shape[1];
  if (static_cast<int64_t>(a.params.size()) != batch || static_cast<int64_t>(a.steps.size()) != batch ||
      a.out_ids.numel() != batch || a.out_ids.dtype != DType::kInt32 || a.out_ids.device != Device::kCuda)
    return invalid_argument("sample_cuda: want batch params/steps and device int32 out_ids [batch]");
  if (vocab <= 0 || vocab > 0x7fffffff || batch > 0x7fffffff)
    return invalid_argument("sample_cuda: vocab " + std::to_string(vocab) + " out of range");
  std::vector<RowParams> sampled;
  std::vector<int32_t> greedy;
  for (int64_t b = 0; b < batch; ++b) {
    const SamplingParams& p = a.params[static_cast<size_t>(b)];
    if (p.temperature < 0.f || p.top_p <= 0.f || p.top_p > 1.f || p.min_p < 0.f || p.min_p > 1.f || p.top_k < 0)
      return invalid_argument("sample_cuda: bad sampling parameters for row " + std::to_string(b));
    if (p.temperature <= 0.f || p.top_k == 1) greedy.push_back(static_cast<int32_t>(b));
    else sampled.push_back({p.temperature, p.top_p, p.min_p, p.top_k, p.seed, a.steps[static_cast<size_t>(b)],
                            static_cast<int32_t>(b)});
  }
  if (batch == 0) return ok_status();
  Impl& m = *impl_;
  const int64_t meta_bytes = static_cast<int64_t>(sampled.size() * sizeof(RowParams) + greedy.size() * sizeof(int32_t));
  m.staging.resize(static_cast<size_t>(meta_bytes));
  std::memcpy(m.staging.data(), sampled.data(), sampled.size() * sizeof(RowParams));
  std::memcpy(m.staging.data() + sampled.size() * sizeof(RowParams), greedy.data(), greedy.size() * sizeof(int32_t));
  KILN_RETURN_IF_ERROR(m.reserve(m.meta, meta_bytes, stream));
  KILN_CUDA_CHECK(cudaMemcpyAsync(m.meta.data(), m.staging.data(), static_cast<size_t>(meta_bytes),
                                  cudaMemcpyHostToDevice, stream));
  const auto* rows = static_cast<const RowParams*>(m.meta.data());
  const float* logits = static_cast<const float*>(a.logits.data);
  int32_t* out_ids = static_cast<int32_t*>(a.out_ids.data);

  if (!greedy.empty()) {
    GreedyParams gp{logits, reinterpret_cast<const int32_t*>(rows + sampled.size()), out_ids, vocab};
    sample_greedy_kernel<<<static_cast<unsigned>(greedy.size()), kThreads, 0, stream>>>(gp);
    KILN_CUDA_CHECK_LAUNCH();
  }
  if (sampled.empty()) return ok_status();

  const int64_t chunk_rows = std::clamp<int64_t>(kMaxSortItems / vocab, 1, std::min<int64_t>(65535, static_cast<int64_t>(sampled.size())));
  const int64_t items = chunk_rows * vocab;
  size_t temp_bytes = 0;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const uint64_t*>(nullptr),
                                                  static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), items, 0, 64, stream));
  KILN_RETURN_IF_ERROR(m.reserve(m.keys_in, items * 8, stream));
  KILN_RETURN_IF_ERROR(m.reserve(m.keys_out, items * 8, stream));
  KILN_RETURN_IF_ERROR(m.reserve(m.ids_in, items * 4, stream));
  KILN_RETURN_IF_ERROR(m.reserve(m.ids_out, items * 4, stream));
  KILN_RETURN_IF_ERROR(m.reserve(m.prob, items * 4, stream));
  KILN_RETURN_IF_ERROR(m.reserve(m.sort_temp, static_cast<int64_t>(temp_bytes), stream));
  for (int64_t first = 0; first < static_cast<int64_t>(sampled.size()); first += chunk_rows) {
    const int64_t n_rows = std::min<int64_t>(chunk_rows, static_cast<int64_t>(sampled.size()) - first);
    KeysParams kp{logits, rows, static_cast<uint64_t*>(m.keys_in.data()), static_cast<int32_t*>(m.ids_in.data()),
                  vocab, static_cast<int>(first)};
    const dim3 grid(static_cast<unsigned>((vocab + kThreads - 1) / kThreads), static_cast<unsigned>(n_rows));
    sample_keys_kernel<<<grid, kThreads, 0, stream>>>(kp);
    KILN_CUDA_CHECK_LAUNCH();
    // Sort only the bits in use: 32 of logit plus enough for the chunk row.
    const int end_bit = 32 + static_cast<int>(std::bit_width(static_cast<uint64_t>(n_rows - 1)));
    size_t bytes = static_cast<size_t>(m.sort_temp.size());
    KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        m.sort_temp.data(), bytes, static_cast<const uint64_t*>(m.keys_in.data()), static_cast<uint64_t*>(m.keys_out.data()),
        static_cast<const int32_t*>(m.ids_in.data()), static_cast<int32_t*>(m.ids_out.data()), n_rows * vocab, 0,
        end_bit, stream));
    RowsParams rp{rows, static_cast<const uint64_t*>(m.keys_out.data()), static_cast<const int32_t*>(m.ids_out.data()),
                  static_cast<float*>(m.prob.data()), out_ids, vocab, static_cast<int>(first)};
    sample_rows_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(rp);
    KILN_CUDA_CHECK_LAUNCH();
  }
  return ok_status();
}

}  // namespace kiln
