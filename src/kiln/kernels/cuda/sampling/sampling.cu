// CUDA sampling that reproduces sample_cpu exactly.
//   greedy rows (temperature 0 or top_k 1): argmax over slices of the row, ties to the lower id.
//   sampled rows: one device-wide radix sort of (row, logit descending) keys with the token ids
//   as values (stable, so equal logits keep the lower id first: sample_cpu's order), then one
//   block per row computes exp((l - max) / T) in parallel (double exp rounded to f32; glibc's
//   expf differs by one ulp on ~0.1% of inputs, which moves a pick only if the draw lands
//   within that rounding of a boundary) and one thread runs the two sums that must be
//   sequential, in the CPU's order: the normalizer, then the running sums of the probabilities
//   (recorded, so top-p, the total and the draw are binary searches). The sums stop early,
//   exactly: the values are sorted descending, so once one is below half an ulp of the running
//   sum, neither it nor any later one can change it any more.
// Weak spot: those sequential sums cost ~10 cycles per token visited, so a flat distribution
// over a large vocabulary (no top-k) takes milliseconds; a parallel exact scan (integer ulp
// steps within each binade of the running sum) is the next step.
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

// The running sums cum[i] = fl(cum[i - 1] + x[i]) for i in [0, n), written to `cum`; stops
// after the first i with cum[i] >= stop_at, or once the sum cannot change any more. Returns how
// many entries were written (m); every later running sum equals cum[m - 1].
__device__ int sequential_prefix(const float* x, int n, float stop_at, float* cum) {
  float c = 0.f;
  ScanChunk cur, next;
  cur.load(x, 0, n);
  for (int i = 0; i < n; i += kScanChunk) {
    next.load(x, i + kScanChunk, n);
    if (cur.v[0] < half_ulp(c)) return i;
#pragma unroll
    for (int j = 0; j < kScanChunk; ++j) {
      c += cur.v[j];
      if (i + j < n) cum[i + j] = c;
      if (c >= stop_at) return min(i + j + 1, n);
    }
    cur = next;
  }
  return n;
}

// The first i in [0, n) with pred(cum_i) over the non-decreasing running sums (cum[i] for
// i < m, cum[m - 1] after), or -1.
template <typename Pred>
__device__ int first_index(const float* cum, int m, int n, Pred pred) {
  const int hi = min(m, n);
  if (hi <= 0 || !pred(cum[hi - 1])) return -1;
  int lo = 0, top = hi - 1;  // pred(cum[top]) holds
  while (lo < top) {
    const int mid = (lo + top) / 2;
    if (pred(cum[mid])) top = mid; else lo = mid + 1;
  }
  return top;
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

// Greedy: each row is split into up to kGreedySlices slices, one block each (argmax of its slice,
// float4 loads when the rows allow), then one warp per row reduces the slices. Ties go to the
// lower id everywhere, as std::max_element's first maximum.
constexpr int kGreedySlices = 32;
constexpr int64_t kGreedyMinSlice = 4096;

struct GreedyParams {
  const float* logits;  // [batch, vocab]
  const int32_t* rows;  // [greedy rows]
  float* part_v;        // [greedy rows, slices]
  int32_t* part_i;      // [greedy rows, slices]
  int32_t* out_ids;     // [batch]
  int64_t vocab, slice;  // slice: elements per slice, a multiple of 4
  int slices;
  bool vec4;            // rows are float4-aligned
};

__device__ __forceinline__ void keep_first_max(float& bv, int64_t& bi, float v, int64_t i) {
  if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}

__global__ void __launch_bounds__(kThreads) sample_greedy_slices_kernel(const __grid_constant__ GreedyParams p) {
  __shared__ float best_v[kThreads / 32];
  __shared__ int64_t best_i[kThreads / 32];
  const int row = p.rows[blockIdx.y];
  const float* l = p.logits + row * p.vocab;
  const int64_t begin = blockIdx.x * p.slice, end = min(begin + p.slice, p.vocab);
  float bv = -INFINITY;
  int64_t bi = p.vocab;  // "none yet": any element beats it
  if (p.vec4) {
    const float4* l4 = reinterpret_cast<const float4*>(l);
    for (int64_t q = begin / 4 + threadIdx.x; q < end / 4; q += kThreads) {
      const float4 v = l4[q];
      keep_first_max(bv, bi, v.x, 4 * q);
      keep_first_max(bv, bi, v.y, 4 * q + 1);
      keep_first_max(bv, bi, v.z, 4 * q + 2);
      keep_first_max(bv, bi, v.w, 4 * q + 3);
      if (bi == p.vocab) bi = 4 * q;  // all -inf (or NaN): still a valid index
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      keep_first_max(bv, bi, l[i], i);
      if (bi == p.vocab) bi = i;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    keep_first_max(bv, bi, ov, oi);
  }
  if ((threadIdx.x & 31) == 0) { best_v[threadIdx.x >> 5] = bv; best_i[threadIdx.x >> 5] = bi; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) keep_first_max(bv, bi, best_v[w], best_i[w]);
    p.part_v[blockIdx.y * p.slices + blockIdx.x] = bv;
    p.part_i[blockIdx.y * p.slices + blockIdx.x] = static_cast<int32_t>(bi);
  }
}

__global__ void sample_greedy_reduce_kernel(const __grid_constant__ GreedyParams p) {  // one warp per row
  const int lane = threadIdx.x;
  float bv = -INFINITY;
  int64_t bi = p.vocab;
  if (lane < p.slices) { bv = p.part_v[blockIdx.x * p.slices + lane]; bi = p.part_i[blockIdx.x * p.slices + lane]; }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    keep_first_max(bv, bi, ov, oi);
  }
  if (lane == 0) p.out_ids[p.rows[blockIdx.x]] = static_cast<int32_t>(bi);
}

struct RowsParams {
  const RowParams* rows;  // [sampled rows]
  const uint64_t* keys;   // [chunk rows, vocab] sorted
  const int32_t* ids;     // [chunk rows, vocab] sorted with the keys
  float* prob;            // [chunk rows, vocab] scratch: probabilities in sorted order
  float* cum;             // [chunk rows, vocab] scratch: their running sums
  int32_t* out_ids;       // [batch]
  int64_t vocab;
  int first;
};

__global__ void __launch_bounds__(kThreads) sample_rows_kernel(const __grid_constant__ RowsParams p) {
  __shared__ float s_sum;
  __shared__ int s_keep, s_written;
  __shared__ int s_first_fail[kThreads / 32];
  const RowParams rp = p.rows[p.first + blockIdx.x];
  const uint64_t* keys = p.keys + blockIdx.x * p.vocab;
  const int32_t* ids = p.ids + blockIdx.x * p.vocab;
  float* prob = p.prob + blockIdx.x * p.vocab;
  float* cum = p.cum + blockIdx.x * p.vocab;
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
  if (threadIdx.x == 0) {  // running sums of prob (one pass), then top-p: the smallest prefix reaching top_p
    const int m = sequential_prefix(prob, keep0, rp.top_p < 1.0f ? rp.top_p : INFINITY, cum);
    const float top_p = rp.top_p;
    const int cut = top_p < 1.0f ? first_index(cum, m, keep0, [top_p](float c) { return c >= top_p; }) : -1;
    s_keep = cut >= 0 ? cut + 1 : keep0;
    s_written = m;
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
  const int m = s_written;
  const float total = cum[min(keep, m) - 1];  // the CPU's sequential sum over [0, keep)
  const float u = sampling_uniform_device(rp.seed, rp.step) * total;
  const int at = first_index(cum, m, keep, [u](float c) { return u < c; });
  p.out_ids[rp.row] = ids[at >= 0 ? at : keep - 1];
}

}  // namespace

struct CudaSampler::Impl {
  DeviceBuffer meta;  // [sampled rows] RowParams, then [greedy rows] int32
  DeviceBuffer keys_in, keys_out, ids_in, ids_out, prob, cum, sort_temp, greedy_parts;
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

// logits[row, token] = -inf for each banned pair (in place).
__global__ void ban_tokens_kernel(float* logits, const int32_t* pairs, int n, int64_t vocab) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) logits[int64_t{pairs[2 * i]} * vocab + pairs[2 * i + 1]] = -INFINITY;
}

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
  for (const auto& [row, token] : a.banned)
    if (row < 0 || row >= batch || token < 0 || token >= vocab)
      return invalid_argument("sample_cuda: banned (row " + std::to_string(row) + ", token " + std::to_string(token) + ") out of range");
  const int64_t params_bytes = static_cast<int64_t>(sampled.size() * sizeof(RowParams) + greedy.size() * sizeof(int32_t));
  const int64_t meta_bytes = params_bytes + static_cast<int64_t>(a.banned.size()) * 8;
  m.staging.resize(static_cast<size_t>(meta_bytes));
  std::memcpy(m.staging.data(), sampled.data(), sampled.size() * sizeof(RowParams));
  std::memcpy(m.staging.data() + sampled.size() * sizeof(RowParams), greedy.data(), greedy.size() * sizeof(int32_t));
  for (size_t i = 0; i < a.banned.size(); ++i) {
    const int32_t pair[2] = {a.banned[i].first, a.banned[i].second};
    std::memcpy(m.staging.data() + params_bytes + i * 8, pair, 8);
  }
  KILN_RETURN_IF_ERROR(m.reserve(m.meta, meta_bytes, stream));
  KILN_CUDA_CHECK(cudaMemcpyAsync(m.meta.data(), m.staging.data(), static_cast<size_t>(meta_bytes),
                                  cudaMemcpyHostToDevice, stream));
  const auto* rows = static_cast<const RowParams*>(m.meta.data());
  const float* logits = static_cast<const float*>(a.logits.data);
  if (!a.banned.empty()) {
    const int n = static_cast<int>(a.banned.size());
    ban_tokens_kernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        static_cast<float*>(a.logits.data), reinterpret_cast<const int32_t*>(static_cast<const char*>(m.meta.data()) + params_bytes), n,
        vocab);
    KILN_CUDA_CHECK_LAUNCH();
  }
  int32_t* out_ids = static_cast<int32_t*>(a.out_ids.data);

  if (greedy.size() > 65535 || sampled.size() > 0x7fffffff)
    return unimplemented("sample_cuda: more than 65535 rows of one kind");
  if (!greedy.empty()) {
    GreedyParams gp{};
    gp.logits = logits;
    gp.rows = reinterpret_cast<const int32_t*>(rows + sampled.size());
    gp.out_ids = out_ids;
    gp.vocab = vocab;
    gp.slices = static_cast<int>(std::clamp<int64_t>(vocab / kGreedyMinSlice, 1, kGreedySlices));
    gp.slice = ((vocab + gp.slices - 1) / gp.slices + 3) / 4 * 4;
    gp.vec4 = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
    const int64_t parts = static_cast<int64_t>(greedy.size()) * gp.slices;
    KILN_RETURN_IF_ERROR(m.reserve(m.greedy_parts, parts * 8, stream));
    gp.part_v = static_cast<float*>(m.greedy_parts.data());
    gp.part_i = reinterpret_cast<int32_t*>(gp.part_v + parts);
    const dim3 grid(static_cast<unsigned>(gp.slices), static_cast<unsigned>(greedy.size()));
    sample_greedy_slices_kernel<<<grid, kThreads, 0, stream>>>(gp);
    KILN_CUDA_CHECK_LAUNCH();
    sample_greedy_reduce_kernel<<<static_cast<unsigned>(greedy.size()), 32, 0, stream>>>(gp);
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
  KILN_RETURN_IF_ERROR(m.reserve(m.cum, items * 4, stream));
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
                  static_cast<float*>(m.prob.data()), static_cast<float*>(m.cum.data()), out_ids, vocab,
                  static_cast<int>(first)};
    sample_rows_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(rp);
    KILN_CUDA_CHECK_LAUNCH();
  }
  return ok_status();
}

}  // namespace kiln
