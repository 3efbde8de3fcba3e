// Decode-regime ("skinny", m = 1..64) GEMM: y[m, n] = x[m, k] @ w[n, k]^T (* w_scale) (+ bias),
// weights streamed once from HBM. Internal to kernels/cuda/gemm (Gemm::run dispatches to it).
// Variants (the table in skinny_gemm.cu): w bf16 | fp8 e4m3 (w_scale [n] or [1] f32) x
// m tiles of 8 / 16 / 32 / 64 rows x y bf16 | f32, with their pipeline shapes, as a grid of one
// CTA per row block or as a persistent warp stream (equal bytes per warp), fp8 widened to bf16 or
// to f16 (x rounded to f16), or not widened at all (e4m3: x quantized per token to e4m3 by a
// pre-pass kernel, the e4m3 mma on the weight bytes); x bf16. CUDA-free header.
#pragma once
#include <cstdint>
#include <span>

#include "kiln/core/status.h"
#include "kiln/kernels/linear.h"

struct CUstream_st;

namespace kiln {

inline constexpr int64_t kSkinnyGemmMaxM = 64;

// Scratch for split-K (owned by the Gemm object so that a captured graph never allocates):
// f32 partial tiles and one arrival counter per row block (zero between calls: the last block
// to arrive resets it). The e4m3 variants take the last skinny_x_fp8_bytes(m, k) bytes of the
// partials (aligned down to 256) for x quantized to e4m3 and its scales; split K uses the rest.
struct SkinnyGemmWorkspace {
  float* partials = nullptr;
  int64_t partial_floats = 0;
  int* counters = nullptr;
  int64_t num_counters = 0;
  int num_sms = 132;
  // Launch with programmatic dependent launch: the kernel requests its first weight chunks
  // before the previous kernel on the stream has finished (it waits for it before reading x or
  // writing anything). Requires that the weights are not written by the kernel just before.
  bool pdl = true;
};

struct SkinnyGemmVariant {
  DType w, y;
  int max_m;       // this kernel pads m up to max_m (8 * its n-tiles)
  int row_tiles;   // 16-row weight tiles per CTA (kRT)
  int unroll;      // k steps per chunk (kU)
  int stages;      // chunks in the cp.async ring of each warp (kS; kS - 1 in flight)
  bool preferred;  // the one Gemm::run uses for its (w, y, max_m); the others: tuning alternatives
  bool stream = false;  // persistent warp stream (skinny_gemm_core.cuh WarpStream), else one CTA per row block
  // fp8 only: weights widened to f16 by the hardware converter and x rounded to f16 (clamped to
  // +-65504) for the f16 mma, else weights widened exactly to bf16 and x as given.
  bool f16 = false;
  // fp8 only: x quantized per token (row) to e4m3 exactly as the fp8 prefill path does (quantize.h:
  // scale = amax / 448, q = e4m3(x / scale)) and the e4m3 mma.m16n8k32 on the weight bytes; y =
  // sums * x_scale[row] * w_scale[n].
  bool e4m3 = false;
  // fp8 only (with e4m3): x quantized as above and the native wgmma.m64nNk32.e4m3 (skinny_wgmma.cuh):
  // one or two warpgroups of 64 weight rows each per CTA (row_tiles 4 | 8), max_m = N (8 | 16 |
  // 32 | 64), stages = its ring; warps per CTA fixed at row_tiles (SkinnyGemmConfig::warps ignored).
  bool wgmma = false;
  // f16 rows only: independent accumulator sets (mma i of a chunk into set i % acc_sets) and x's
  // vectors loaded one chunk ahead (skinny_gemm_core.cuh).
  int acc_sets = 1;
  bool x_ahead = false;
  // preferred only for n >= min_n (weight rows); below, Gemm::run takes the next preferred row of
  // its max_m (the wgmma rows need enough 128-row CTAs to fill the SMs without split K).
  int64_t min_n = 0;
};
std::span<const SkinnyGemmVariant> skinny_gemm_variants();

// Overrides of the launch choices (bench sweeps, tests): 0 / -1 = automatic.
struct SkinnyGemmConfig {
  int variant = -1;  // index into skinny_gemm_variants() (must fit the dtypes and m)
  int warps = 0;     // warps per CTA, 1..8 (they split the CTA's k range)
  int split_k = 0;   // CTAs along k (reduced in-launch by the last one); stream variants: CTAs per SM
  int diag = 0;      // stream variants, micro-benchmarks only: 1 = loads only, 2 = math only (wrong y)
  bool x_bf16 = false;  // automatic choice among the rows that keep x bf16 (no e4m3 rows)
  // wgmma rows: split K through the workspace's partials even where the splits fit one
  // thread-block cluster (tests, benchmarks)
  bool workspace_split = false;
  // y [m, I] = silu(x w_gate^T) * (x w_up^T) of w = [gate; up] (2I rows, I % 8 == 0), each product
  // rounded to bf16 first (the bits of the GEMM + silu_mul_cuda): only where the choice for the
  // plain GEMM is a grid row, y bf16, no bias (else unimplemented; Gemm::run_swiglu).
  bool swiglu = false;
};

// The launch shape skinny_gemm_cuda picks (for the bench's log).
struct SkinnyGemmLaunch {
  int variant = -1, warps = 0, split_k = 0;
  int64_t ctas = 0;
  int ctas_per_sm = 0;  // resident, from the occupancy calculator
  bool cluster_split = false;  // wgmma rows: the splits met in a thread-block cluster
};

// Workspace bytes the e4m3 variants need for m rows of x of length k (see SkinnyGemmWorkspace).
int64_t skinny_x_fp8_bytes(int64_t m, int64_t k);

// Whether skinny_gemm_cuda's automatic choice for (w, y, m, n) quantizes x per token to e4m3 (a
// preferred e4m3 row), given a workspace with room for x: the reference must then round x so.
bool skinny_gemm_quantizes_x(DType w, DType y, int64_t m, int64_t n);

// Whether skinny_gemm_cuda can run these arguments (dtypes, m <= 64, 16-byte aligned rows of
// w and x, k a multiple of 8 (bf16) or 16 (fp8)); the reason otherwise. x_quantized: x is the
// pre-quantized fp8 x of SkinnyXq (contiguous [m, k] e4m3).
Status skinny_gemm_check(const LinearArgs& args, bool x_quantized = false);

// x already quantized per token to e4m3 (quantize_fp8_cuda's bits, e.g. by the rmsnorm or the
// SwiGLU before the GEMM): q [m, k] contiguous, scale [m] f32, device pointers. The e4m3 rows
// then skip their pre-pass kernel; the arithmetic is that of passing the bf16 x (the same bits at
// the same launch shape: split K may differ only where the x copy would have crowded the workspace).
struct SkinnyXq {
  const uint8_t* q;
  const float* scale;
};

// args as in Gemm::run (x bf16, w bf16 | fp8 e4m3 + w_scale, y bf16 | f32, bias y's dtype);
// the launch shape chosen from the shape, the SM count and the occupancy unless cfg says.
// xq: x given pre-quantized (args.x is then the fp8 q tensor, [m, k]); only where the chosen row
// is an e4m3 one (skinny_gemm_quantizes_x), else unimplemented.
Status skinny_gemm_cuda(const LinearArgs& args, const SkinnyGemmWorkspace& ws, CUstream_st* stream,
                        const SkinnyGemmConfig& cfg = {}, SkinnyGemmLaunch* launch = nullptr, const SkinnyXq* xq = nullptr);

}  // namespace kiln
