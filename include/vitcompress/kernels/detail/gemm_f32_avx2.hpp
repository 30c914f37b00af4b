// SPDX-License-Identifier: Apache-2.0
#pragma once
// The AVX2+FMA fp32 GEMM path. Tile: 6 rows × 1 panel (two ymm per row) = 12 ymm accumulators,
// 2 panel loads and 6 broadcasts per k (16 ymm registers in all). A last panel with at most 8
// columns runs as one ymm per row, half the work: attention's Q·Kᵀ over 17 tokens, P·V with a
// head dim of 24, and MLP widths left by pruning end in such panels. Summation order as the scalar
// reference (one fused multiply-add per k, in order), so results are bit-identical to it.

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_f32_common.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

namespace vitc::kernels::detail {

struct GemmF32Avx2Kernel {
  static constexpr int kRows = 6, kPanels = 1;
  static constexpr Index kDepthBlock = 0;
  template <int MR, int NV>
  VITC_TARGET_AVX2 static void tile(const GemmF32Problem& p, const GemmF32Tile& t) noexcept {
    if (p.n - (t.panel0 + NV - 1) * PackedPanelsF32::kPanel <= 8)
      halves<MR, 2 * NV - 1>(p, t);
    else
      halves<MR, 2 * NV>(p, t);
  }

  // MR rows × the first kH ymm halves (8 columns each) of the tile's panels.
  template <int MR, int kH>
  VITC_TARGET_AVX2 static void halves(const GemmF32Problem& p, const GemmF32Tile& t) noexcept {
    const Index i0 = t.i0, panel0 = t.panel0;
    constexpr Index kP = PackedPanelsF32::kPanel;
    __m256 acc[MR][kH];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int h = 0; h < kH; ++h) acc[r][h] = _mm256_setzero_ps();
    const float* a = p.a + i0 * p.lda;
    const Index lda = p.lda, ps = p.b.panel_floats(), kk = p.k;
    const float* b = p.b.panel(panel0);
    for (Index k = 0; k < kk; ++k) {
      __m256 bv[kH];
#pragma GCC unroll 8
      for (int h = 0; h < kH; ++h) bv[h] = _mm256_loadu_ps(b + (h / 2) * ps + k * kP + (h % 2) * 8);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
#pragma GCC unroll 8
        for (int h = 0; h < kH; ++h) acc[r][h] = _mm256_fmadd_ps(av, bv[h], acc[r][h]);
      }
    }
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 8
    for (int h = 0; h < kH; ++h) {
      const Index j0 = (panel0 + h / 2) * kP + (h % 2) * 8;
      const Index nc = std::min<Index>(8, p.n - j0);
      if (nc <= 0) continue;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nc)), iota);
      const __m256 bias =
          p.bias != nullptr ? _mm256_maskload_ps(p.bias + j0, mask) : _mm256_setzero_ps();
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        __m256 x = acc[r][h];
        if (p.bias != nullptr) x = _mm256_add_ps(x, bias);
        if (p.residual != nullptr)
          x = _mm256_add_ps(x, _mm256_maskload_ps(p.residual + (i0 + r) * p.ldr + j0, mask));
        float* out = p.c + (i0 + r) * p.ldc + j0;
        if (nc == 8)
          _mm256_storeu_ps(out, x);
        else
          _mm256_maskstore_ps(out, mask, x);
      }
    }
  }
};

template <class Policy>
void gemm_f32_run(arch::Avx2, const GemmF32Problem& p, Policy& policy) {
  gemm_f32_parallel<GemmF32Avx2Kernel>(p, policy);
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
