// SPDX-License-Identifier: Apache-2.0
#pragma once
// Internals shared by the fp32 GEMM paths: the problem description and the blocked driver that
// sweeps register tiles over C. Each path supplies a Kernel type with
//
//   static constexpr int kRows, kPanels;    // the largest tile: kRows × 16·kPanels
//   static constexpr Index kDepthBlock;     // 0, or the depth block for deep K (see drive)
//   template <int MR, int NV> static void tile(const GemmF32Problem& p, const GemmF32Tile& t);
//
// where tile<MR, NV> computes rows [t.i0, t.i0 + MR) of C over the NV panels from t.panel0, the
// last of which may be partial (columns >= N are neither read from bias/residual nor written).

#include <algorithm>
#include <cmath>
#include <utility>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/packed_weights_f32.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define VITC_F32_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define VITC_F32_ALWAYS_INLINE inline
#endif

namespace vitc::kernels::detail {

// C[M×N] = A·B (+ bias[j]) (+ residual[i][j]); A rows have unit column stride (the entry point
// copies a strided A first), C has column stride 1. `residual` may equal `c` (in-place add) when
// its row stride equals C's.
struct GemmF32Problem {
  const float* a = nullptr;
  Index lda = 0;
  Index m = 0, k = 0, n = 0;
  PackedPanelsF32 b;
  float* c = nullptr;
  Index ldc = 0;
  const float* bias = nullptr;
  const float* residual = nullptr;
  Index ldr = 0;
  // Partial sums between depth blocks: M × ldp floats (ldp = 16 · panels), or nullptr.
  float* partial = nullptr;
  Index ldp = 0;
};

// The definition of one element: acc = 0; acc = fma(A[i][k], B[k][j], acc) for k = 0..K-1 in
// order; C = acc + bias[j]; C = C + residual[i][j] (each step one IEEE operation, round to
// nearest). Every path computes exactly this.
[[nodiscard]] inline float gemm_f32_reference_element(const GemmF32Problem& p, Index i,
                                                      Index j) noexcept {
  float acc = 0.0F;
  const float* a = p.a + i * p.lda;
  for (Index k = 0; k < p.k; ++k) acc = std::fma(a[k], p.b.at(k, j), acc);
  if (p.bias != nullptr) acc = acc + p.bias[j];
  if (p.residual != nullptr) acc = acc + p.residual[i * p.ldr + j];
  return acc;
}

// One register tile: rows [i0, i0 + MR) × the NV panels from panel0, over depth [k0, k1).
// `first`: the accumulators start at +0, else they are reloaded from p.partial (M × ldp floats,
// panel-aligned columns, the partial sums a previous depth block stored); `last`: the epilogue
// runs and C is written, else the accumulators are stored to p.partial. Kernels whose kDepthBlock
// is 0 are only called with the whole depth (first = last = true).
struct GemmF32Tile {
  Index i0 = 0, panel0 = 0, k0 = 0, k1 = 0;
  bool first = true, last = true;
};

template <class Kernel, int NV, int R = Kernel::kRows>
VITC_F32_ALWAYS_INLINE void gemm_f32_rows(int mr, const GemmF32Problem& p,
                                          const GemmF32Tile& t) noexcept {
  if constexpr (R >= 1) {
    if (mr == R) {
      Kernel::template tile<R, NV>(p, t);
      return;
    }
    gemm_f32_rows<Kernel, NV, R - 1>(mr, p, t);
  }
}

template <class Kernel, int NV = Kernel::kPanels>
VITC_F32_ALWAYS_INLINE void gemm_f32_panels(int nv, int mr, const GemmF32Problem& p,
                                            const GemmF32Tile& t) noexcept {
  if constexpr (NV >= 1) {
    if (nv == NV) {
      gemm_f32_rows<Kernel, NV>(mr, p, t);
      return;
    }
    gemm_f32_panels<Kernel, NV - 1>(nv, mr, p, t);
  }
}

// Depths above this are cut into blocks (paths with kDepthBlock > 0) so that A's block stays in
// L2 while every column block passes over it; the partial sums then need p.partial.
inline constexpr Index kGemmF32DepthBlockAbove = 2048;

// Panels [panel_begin, panel_end) of C: blocks of kPanels panels (their K×16·kPanels slice of B
// stays in L1/L2), each swept by all row tiles (A streams from L2). The M rows are cut into
// ceil(M / kRows) tiles of near-equal height (17 rows: 6 + 6 + 5, not 8 + 8 + 1), so that no
// tile is a nearly empty, load-bound one. With a deep K (DeiT-base fc2: 3072) the depth is
// cut into near-equal blocks of at most Kernel::kDepthBlock and the column blocks run inside
// each depth block: A (M × K floats, 2.4 MB there) is then read from L3 once, not once per
// column block. Each C element still sees every k in order (the partial sum is stored as the
// float accumulator it is), so the result is unchanged, bit for bit.
template <class Kernel>
void gemm_f32_drive(const GemmF32Problem& p, Index panel_begin, Index panel_end) noexcept {
  constexpr Index kR = Kernel::kRows, kV = Kernel::kPanels;
  const Index tiles = (p.m + kR - 1) / kR;
  const Index base = tiles > 0 ? p.m / tiles : 0, extra = tiles > 0 ? p.m % tiles : 0;
  Index kblocks = 1;
  if constexpr (Kernel::kDepthBlock > 0)
    if (p.k > kGemmF32DepthBlockAbove && p.partial != nullptr)
      kblocks = (p.k + Kernel::kDepthBlock - 1) / Kernel::kDepthBlock;
  const Index kc = (p.k + kblocks - 1) / kblocks;
  for (Index kb = 0; kb < kblocks; ++kb) {
    GemmF32Tile t;
    t.k0 = kb * kc;
    t.k1 = std::min(p.k, t.k0 + kc);
    t.first = kb == 0;
    t.last = kb + 1 == kblocks;
    for (Index pb = panel_begin; pb < panel_end; pb += kV) {
      const int nv = static_cast<int>(std::min(kV, panel_end - pb));
      t.panel0 = pb;
      t.i0 = 0;
      for (Index tile = 0; tile < tiles; ++tile) {
        const Index mr = base + (tile < extra ? 1 : 0);
        gemm_f32_panels<Kernel>(nv, static_cast<int>(mr), p, t);
        t.i0 += mr;
      }
    }
  }
}

// Below this many multiply-adds a GEMM runs on the calling thread (a wake-up costs more).
inline constexpr Index kGemmF32MinParallelMacs = Index{1} << 16;

// Splits the panels, in blocks of kPanels, over the policy's threads.
template <class Kernel, class Policy>
void gemm_f32_parallel(const GemmF32Problem& p, Policy& policy) {
  const Index panels = p.b.panels();
  const Index blocks = (panels + Kernel::kPanels - 1) / Kernel::kPanels;
  const auto body = [&](Index b0, Index b1) {
    gemm_f32_drive<Kernel>(p, b0 * Kernel::kPanels, std::min(panels, b1 * Kernel::kPanels));
  };
  if (policy.num_threads() > 1 && blocks > 1 && p.m * p.k * p.n >= kGemmF32MinParallelMacs)
    policy.parallel_for(blocks, 1, body);
  else
    body(0, blocks);
}

}  // namespace vitc::kernels::detail
