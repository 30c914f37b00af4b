// SPDX-License-Identifier: Apache-2.0
#pragma once
// The AVX-512 fp32 GEMM path (arch::Avx512Vnni tag: it runs wherever that tag is available and
// uses AVX-512F only). Tile: 8 rows × 3 panels = 24 zmm accumulators; per k, 3 panel loads and 8
// broadcasts of A feed 24 vfmadd231ps. Deep K (> 2048) runs in depth blocks of <= 512
// (detail/gemm_f32_common.hpp). Each accumulator lane is one C element summed over k in
// order with a fused multiply-add, so the result equals the scalar reference bit for bit.

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_f32_common.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

namespace vitc::kernels::detail {

// kRows × kPanels tile; the path uses GemmF32Avx512Kernel (other sizes exist for measurements).
template <int Rows, int Panels, int DepthBlock = 512>
struct GemmF32Avx512TileKernel {
  static constexpr int kRows = Rows, kPanels = Panels;
  static constexpr Index kDepthBlock = DepthBlock;  // 8 rows × 512 k of A: 16 KB; B block 96 KB
  template <int MR, int NV>
  VITC_TARGET_AVX512VNNI static void tile(const GemmF32Problem& p, const GemmF32Tile& t) noexcept {
    constexpr Index kP = PackedPanelsF32::kPanel;
    const Index i0 = t.i0, panel0 = t.panel0;
    float* part = p.partial + i0 * p.ldp + panel0 * kP;
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[r][v] = t.first ? _mm512_setzero_ps() : _mm512_loadu_ps(part + r * p.ldp + v * kP);
    const float* a = p.a + i0 * p.lda;
    const Index lda = p.lda, ps = p.b.panel_floats();
    const float* b = p.b.panel(panel0);
    for (Index k = t.k0; k < t.k1; ++k) {
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + v * ps + k * kP);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
      }
    }
    if (!t.last) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) _mm512_storeu_ps(part + r * p.ldp + v * kP, acc[r][v]);
      return;
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const Index j0 = (panel0 + v) * kP, nc = std::min(kP, p.n - j0);
      const __mmask16 mask = nc >= kP ? __mmask16(0xFFFF) : __mmask16((1U << nc) - 1U);
      const __m512 bias =
          p.bias != nullptr ? _mm512_maskz_loadu_ps(mask, p.bias + j0) : _mm512_setzero_ps();
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        __m512 x = acc[r][v];
        if (p.bias != nullptr) x = _mm512_add_ps(x, bias);
        if (p.residual != nullptr)
          x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, p.residual + (i0 + r) * p.ldr + j0));
        _mm512_mask_storeu_ps(p.c + (i0 + r) * p.ldc + j0, mask, x);
      }
    }
  }
};

using GemmF32Avx512Kernel = GemmF32Avx512TileKernel<8, 3>;

template <class Policy>
void gemm_f32_run(arch::Avx512Vnni, const GemmF32Problem& p, Policy& policy) {
  gemm_f32_parallel<GemmF32Avx512Kernel>(p, policy);
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
