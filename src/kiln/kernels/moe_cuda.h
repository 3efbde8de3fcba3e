// The GPU mixture-of-experts pipeline after routing (moe_route_cuda in moe.h):
//   moe_permute_cuda         group the token rows by expert (stable: token order within an expert)
//   moe_grouped_gemm_cuda    one GEMM per expert over its rows (on one stream, or over lanes)
//   MoeBatchedGemm           or all experts in one batched GEMM (fp8; scales applied after)
//   moe_grouped_wgmma_cuda   or all experts in one launch of kiln's own Hopper kernel (fp8)
//   moe_unpermute_cuda       out[t] = sum_j topk_weights[t, j] * y[row of assignment (t, j)]
// An assignment is (token t, choice j), numbered t * k + j. CUDA-free header (kernels/cuda/moe/).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers
struct CUevent_st;   // cudaEvent_t

namespace kiln {

class Gemm;

// rows = moe_permuted_rows(num_tokens * k, num_experts, align_rows): num_tokens * k, plus up to
// align_rows - 1 padding rows per expert when align_rows > 1.
struct MoePermuteArgs {
  Tensor topk_ids;        // [num_tokens, k] int32, each in [0, num_experts)
  Tensor x;               // [num_tokens, hidden] bf16
  int64_t num_experts = 0;  // <= 256
  Tensor expert_offsets;  // [num_experts + 1] int32 out: expert e owns rows [offsets[e], offsets[e + 1])
  Tensor permuted_src;    // [rows] int32 out: the assignment behind each permuted row (-1: padding)
  Tensor inverse;         // [num_tokens * k] int32 out: the permuted row of each assignment
  Tensor x_permuted;      // [rows, hidden] bf16 out: x_permuted[r] = x[permuted_src[r] / k] (padding: 0)
  // Each expert's rows start at a multiple of align_rows (1..64, a power of two): offsets[e] is
  // aligned, expert e's assignments fill [offsets[e], offsets[e] + count) and the rest of its
  // range is padding (zero rows), so slices of per-row data (an fp8 x's scales) start 4 * align_rows
  // bytes apart. Rows from offsets[num_experts] on are not written.
  int64_t align_rows = 1;
};
Status moe_permute_cuda(const MoePermuteArgs& args, CUstream_st* stream);
int64_t moe_permuted_rows(int64_t assignments, int64_t num_experts, int64_t align_rows);

struct MoeUnpermuteArgs {
  Tensor y_permuted;    // [rows, hidden] bf16: the permute's rows (num_tokens * k, or more with align_rows)
  Tensor topk_weights;  // [num_tokens, k] f32
  Tensor inverse;       // [num_tokens * k] int32 (from moe_permute_cuda)
  Tensor out;           // [num_tokens, hidden] bf16, overwritten (a gather, deterministic: no atomics)
  // Dequant (padded_rows given): y_permuted is MoeBatchedGemm's unscaled output. Assignment a
  // (expert topk_ids[a], permuted row inverse[a]) reads row p = padded_rows[inverse[a]] and each
  // value as v * row_scale[p] * col_scale_ptrs[e][c] (f32, in that order) before the sum.
  Tensor padded_rows;     // [permuted rows] int32 (MoeBatchedTables)
  Tensor topk_ids;        // [num_tokens, k] int32
  Tensor row_scale;       // [rows of y_permuted] f32
  Tensor col_scale_ptrs;  // [num_experts] int64: device pointers to [hidden] f32 each
};
Status moe_unpermute_cuda(const MoeUnpermuteArgs& args, CUstream_st* stream);

struct MoeCudaVariant {
  DType act;  // x, x_permuted, y_permuted, out
  Status (*permute)(const MoePermuteArgs& args, CUstream_st* stream);
  Status (*unpermute)(const MoeUnpermuteArgs& args, CUstream_st* stream);
};
std::span<const MoeCudaVariant> moe_cuda_variants();

// The expert offsets on the host (synchronizes the stream): the grouped GEMM needs them there.
Result<std::vector<int32_t>> moe_offsets_to_host(const Tensor& expert_offsets, CUstream_st* stream);

struct MoeGroupedGemmArgs {
  Tensor x;                            // [rows, k] bf16, or fp8 e4m3 quantized per row (x_scale), grouped by expert
  std::span<const Tensor> weights;     // [num_experts] device tensors [n, k] bf16 | fp8 e4m3 (HF layout)
  std::span<const int32_t> offsets;    // [num_experts + 1] host copy of expert_offsets
  Tensor y;                            // [rows, n] bf16 | f32
  std::span<const Tensor> weight_scales;  // empty (bf16 weights), or [num_experts] x ([n] | [1] f32): fp8
  Tensor x_scale;                      // [rows] f32 when x is fp8 (fp8 weights only; Gemm::run_quantized), else empty
};
// A loop of cuBLASLt GEMMs, one per expert that has rows (experts without rows are skipped). A
// device-side grouped GEMM would save the host round trip for the offsets and the launch per
// expert.
Status moe_grouped_gemm_cuda(Gemm& gemm, const MoeGroupedGemmArgs& args, CUstream_st* stream);

// Lanes: the experts' GEMMs spread over streams that run at the same time. At prefill sizes one
// expert's GEMM does not fill the GPU (Mixtral's down, 256 rows x 4096 x 14336: 32-64 output
// tiles for 132 SMs), so one stream leaves most SMs idle. Lane 0 is the caller's (gemm, stream);
// lanes 1.. are forked from stream 0 (events[0] recorded there) and joined back into it (each
// records events[i], stream 0 waits), so that work after the call sees every expert's rows. Each
// lane has its own Gemm: a cuBLASLt call in flight owns its Gemm's workspaces. Experts go to lanes
// by moe_expert_lanes. The results are the same bits as one lane (each expert's GEMM is the same
// call, on the same plan, on another stream).
struct MoeGemmLanes {
  std::span<Gemm* const> gemms;           // [lanes], lanes >= 1
  std::span<CUstream_st* const> streams;  // [lanes]; streams[0] the caller's
  std::span<CUevent_st* const> events;    // [lanes], created with cudaEventDisableTiming
};
Status moe_grouped_gemm_cuda(const MoeGemmLanes& lanes, const MoeGroupedGemmArgs& args);

// The grouped GEMM in one launch of kiln's own kernel (sm_90a: wgmma + TMA, moe_grouped_wgmma.cu):
//   y[r, c] = bf16(sum_k x[r, k] w_e[c, k] * x_scale[r] * w_scale_e[c])  for r in [offsets[e], offsets[e + 1])
// Persistent CTAs walk tiles of 128 rows of one expert x 256 columns; an expert's last tile is
// padded to 128 rows in the MMA (not stored). The offsets stay on the device: no host round trip.
// Offsets are clamped to [0, rows]; unsorted ones give an expert no rows. fp8 experts with
// per-channel scales only; k % 16 == 0 and n even (TMA strides, paired stores); at most 64 experts.
constexpr int kMoeGroupedWgmmaMaxExperts = 64;
struct MoeGroupedWgmmaArgs {
  Tensor x;                                // [rows, k] fp8 e4m3, grouped by expert
  Tensor x_scale;                          // [rows] f32
  std::span<const Tensor> weights;         // [num_experts] x [n, k] fp8 e4m3 (HF layout)
  std::span<const Tensor> weight_scales;   // [num_experts] x [n] f32
  Tensor offsets;                          // [num_experts + 1] int32, device
  Tensor y;                                // [rows, n] bf16
};
bool moe_grouped_wgmma_available();  // the current device is sm_90 (the kernel is built for sm_90a)
Status moe_grouped_wgmma_cuda(const MoeGroupedWgmmaArgs& args, CUstream_st* stream);

// Owns a set of lanes: lane 0 borrows the caller's Gemm and stream; lanes 1.. own a Gemm
// (Gemm::create()) and a non-blocking stream; every lane owns an event. view(n): the first n lanes.
class MoeLaneSet {
 public:
  static Result<MoeLaneSet> create(int lanes, Gemm* gemm0, CUstream_st* stream0);
  MoeLaneSet();
  MoeLaneSet(MoeLaneSet&&) noexcept;
  MoeLaneSet& operator=(MoeLaneSet&&) noexcept;
  ~MoeLaneSet();
  int size() const;
  MoeGemmLanes view() const { return view(size()); }
  MoeGemmLanes view(int n) const;
  CUstream_st* stream(int i) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How MoeBatchedGemm lays the experts' rows out: entries of rows_per_entry rows, each a chunk of
// one expert's rows (an expert of c rows takes ceil(c / rows_per_entry) entries; its last entry's
// rows past c are padding). Entry i holds the permuted rows [begin[i], end[i]) of expert[i]
// (end - begin <= rows_per_entry) at padded rows i * rows_per_entry ... CPU code (moe_lanes.cc).
struct MoeBatchedLayout {
  int64_t rows_per_entry = 0;
  std::vector<int32_t> expert, begin, end;  // [entries]
  int64_t entries() const { return static_cast<int64_t>(expert.size()); }
  int64_t padded_rows() const { return entries() * rows_per_entry; }
};
inline constexpr int64_t kMoeBatchedMaxEntries = 256;
// rows_per_entry: the largest of kMoeBatchedEntryRows and the largest expert's rows rounded up to
// 32 (one entry per expert), capped at the latter, whose padded rows stay within max_pad_percent
// of the rows, else the smallest; an empty layout (no entries) when the offsets have no rows or
// would need more than kMoeBatchedMaxEntries.
inline constexpr int64_t kMoeBatchedEntryRows[] = {128, 192, 256, 384, 512};
MoeBatchedLayout moe_batched_layout(std::span<const int32_t> offsets, int64_t max_pad_percent);

// The experts' GEMMs as one cuBLASLt pointer-array batched GEMM (moe_batched_gemm.cu), fp8 e4m3 x
// and weights, no scales, over the entries of a layout:
//   y[i * rows_per_entry + r] = x_i[r] @ W_{expert[i]}^T   (f32 sums, rounded to bf16)
// for r < rows_per_entry, where x_i's rows start at x row begin[i] (the permute's rows, x_padded
// false) or at i * rows_per_entry (x_padded). Each entry multiplies rows_per_entry rows: rows past
// its own are whatever x holds there (x needs them), and their y rows mean nothing. The scales go
// to the consumers (SiluMulFp8Dequant, MoeUnpermuteArgs::padded_rows), which find the entries in
// the layout's device tables (upload_layout).
// Why: one GEMM of all experts fills the GPU where one expert's does not (lanes); and cuBLASLt's
// per-channel x per-row (outer vector) fp8 scales are refused for batched GEMMs. H100, Mixtral
// experts, random top-2 of 1024 tokens, even routing (rows padded 12%): gate_up 504 -> 424 us,
// down 301 -> 211 us against the per-expert loop with scales over 2 lanes (moe_grouped_bench,
// 2026-11-24). The first plan of a (rows_per_entry, n, k) times the heuristic's candidates on its
// first call (not while capturing; the heuristic's first pick was up to 1.4x slower), and plans
// of that shape with another number of entries take the winner.
struct MoeBatchedGemmArgs {
  Tensor x;                       // [x rows, k] fp8 e4m3, contiguous
  const MoeBatchedLayout* layout = nullptr;
  bool x_padded = false;
  Tensor expert_ptrs;             // [num_experts] int64 device: each expert's [n, k] fp8 e4m3, contiguous
  int64_t n = 0;
  Tensor y;                       // [layout->padded_rows(), n] bf16, contiguous
};
// The layout on the device, for the consumers: entries [entries, 3] int32 (expert, begin, end)
// and padded_rows [rows] int32 (the padded row of each permuted row, -1 for none).
struct MoeBatchedTables {
  Tensor entries, padded_rows;
};
class MoeBatchedGemm {
 public:
  static Result<MoeBatchedGemm> create();
  MoeBatchedGemm();
  MoeBatchedGemm(MoeBatchedGemm&&) noexcept;
  MoeBatchedGemm& operator=(MoeBatchedGemm&&) noexcept;
  ~MoeBatchedGemm();
  explicit operator bool() const { return impl_ != nullptr; }
  // Writes the layout's tables (of `rows` permuted rows) on the stream into this object's device
  // memory; valid until the next upload_layout.
  Result<MoeBatchedTables> upload_layout(const MoeBatchedLayout& layout, int64_t rows, CUstream_st* stream);
  Status run(const MoeBatchedGemmArgs& args, CUstream_st* stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The lane of each expert ([num_experts]; -1: no rows) for `lanes` lanes: the largest experts
// first, each to the lane with the fewest rows so far (ties: the lower lane), so the lanes' rows
// differ by at most one expert's. Deterministic. CPU code (kernels/cpu/moe_lanes.cc).
std::vector<int> moe_expert_lanes(std::span<const int32_t> offsets, int lanes);

// Decode-regime expert GEMM without a host round trip (moe_decode_gemm.cu): for every slot s (a
// token's choice, s = token * top_k + j), y[s] = x[token or s] @ W_{ids[s]}^T (* scale_{ids[s]}).
// The kernel groups the slots by expert itself (an expert picked by several slots is read once
// per call), so ids stay on the device: no synchronization, CUDA-graph capturable. Decode regime:
// t * top_k <= kMoeDecodeMaxSlots. Every ids value must lie in [0, num_experts): a slot with an
// id outside it gets zeros. Weights: each expert's [n, k] with contiguous 16-byte aligned rows.
// Reference: linear_cpu per slot. At most 256 experts and 512 slots (256 tokens x top-2, the
// GPU server's default --max-num-seqs; the model takes this path for every step of fp8 experts
// up to it, llama_cuda_model.h's kMoeFp8DecodeSlots). The first limit (64 tokens x top-2, 2026-11-22) came
// from the f16 rows (H100, Mixtral fp8 experts, % of copy for gate_up / down: t = 32 x top-2
// 50.5 / 66.1, t = 64 37.6 / 51.6, t = 128 21.6 / 29.4); the wgmma rows stream the experts near
// the copy rate there (t = 64: 95.7 / 91.8), and past the limit the per-expert cuBLASLt loop
// (moe_grouped_gemm_cuda) takes about 1/3 of it at 8-32 rows per expert, after a host
// synchronization.
inline constexpr int64_t kMoeDecodeMaxSlots = 512;
// Device bytes of MoeDecodeGemmArgs::workspace for x of x_rows rows of length k (fp8 experts).
int64_t moe_decode_gemm_workspace_bytes(int64_t x_rows, int64_t k);
struct MoeDecodeGemmArgs {
  Tensor x;            // [t, k] bf16 (shared by a token's top_k slots) or [t * top_k, k] bf16 (one row per slot);
                       // or the same rows already quantized per row to fp8 e4m3 (contiguous, x_scale; fp8 experts)
  Tensor ids;          // [t, top_k] int32 on the device: the expert of each slot
  Tensor expert_ptrs;  // [num_experts] int64 on the device: weight base pointers ([n, k] bf16 or fp8 e4m3)
  Tensor scale_ptrs;   // [num_experts] int64 on the device: f32 [n] per-channel scales (fp8); empty for bf16
  DType w_dtype = DType::kBF16;
  int64_t n = 0;
  Tensor y;            // [t * top_k, n] bf16
  // Optional device scratch of >= moe_decode_gemm_workspace_bytes(rows of x, k) bytes, 16-byte
  // aligned, fixed for a captured graph: the e4m3 row (x quantized per token to e4m3 as the fp8
  // prefill path does, the e4m3 mma) needs it; not the default on sm_90, where it is slower.
  Tensor workspace;
  // x fp8: its per-row scales [rows of x] f32 (quantize_fp8's arithmetic, e.g. rmsnorm_cuda's out_q
  // or silu_mul_fp8_cuda): the e4m3 rows then run without their pre-pass (no workspace needed).
  Tensor x_scale;
  // Programmatic dependent launch: the ids are not written by the kernel just before this one
  // (the down GEMM after silu_mul: they come from the router), so each CTA may find its expert and
  // request its first weight tiles before waiting for that kernel. wgmma row only.
  bool ids_ready = false;
  // Programmatic dependent launch, ids written by the kernel just before this one, which sets them
  // to -1 before its own wait and writes them once known (rmsnorm_cuda's route row with
  // RmsNormArgs::route_ids_cleared_early: the gate_up GEMM after the norm that routes): each CTA
  // reads them as soon as they are all experts, requests its first weight tiles, and after the
  // wait checks that they are unchanged (else drops those tiles and starts again on the final
  // ids: a stale read costs time, never a wrong result). At most kMoeDecodeIdsPollSlots slots (else
  // ignored); wgmma row only.
  bool ids_poll = false;
};
inline constexpr int64_t kMoeDecodeIdsPollSlots = 32;
Status moe_decode_gemm_cuda(const MoeDecodeGemmArgs& args, CUstream_st* stream);

}  // namespace kiln
