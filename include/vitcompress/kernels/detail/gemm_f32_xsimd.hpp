// SPDX-License-Identifier: Apache-2.0
#pragma once
// The portable fp32 GEMM path on xsimd batches (W lanes; a 16-column panel is 16/W batches).
// Tile: 4 rows × 1 panel; a last panel of few columns runs as few batches. Bit-identity with the
// scalar reference needs a fused multiply-add; xsimd 8.1's fma is fused only on some archs (on
// AVX-512 and plain SSE/AVX it computes x*y + z with two roundings), so fused_fma() below calls the
// ISA's instruction directly where the compile flags provide one (AVX-512F, FMA3, AArch64 NEON) and
// kXsimdF32Fused<A> is false elsewhere: the path then runs the scalar kernel, keeping the results
// exact.

#include <xsimd/xsimd.hpp>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_f32_common.hpp"
#include "vitcompress/kernels/detail/gemm_f32_scalar.hpp"

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace vitc::kernels::detail {

template <class A>
inline constexpr int kXsimdF32FmaKind =
#if defined(__AVX512F__)
    std::is_base_of_v<xsimd::avx512f, A> ? 1 :
#endif
#if defined(__FMA__)
    (std::is_base_of_v<xsimd::avx, A> && !std::is_base_of_v<xsimd::avx512f, A>) ? 2
    : (std::is_base_of_v<xsimd::sse2, A> && !std::is_base_of_v<xsimd::avx, A>)  ? 3
    :
#endif
#if defined(__aarch64__)
    std::is_base_of_v<xsimd::neon64, A> ? 4
                                        :
#endif
                                        0;

template <class A>
inline constexpr bool kXsimdF32Fused = kXsimdF32FmaKind<A> != 0 &&
                                       (xsimd::batch<float, A>::size <= 16) &&
                                       (16 % xsimd::batch<float, A>::size == 0);

template <class A>
VITC_F32_ALWAYS_INLINE xsimd::batch<float, A> fused_fma(const xsimd::batch<float, A>& x,
                                                        const xsimd::batch<float, A>& y,
                                                        const xsimd::batch<float, A>& z) noexcept {
  constexpr int kind = kXsimdF32FmaKind<A>;
#if defined(__AVX512F__)
  if constexpr (kind == 1) return _mm512_fmadd_ps(x, y, z);
#endif
#if defined(__FMA__)
  if constexpr (kind == 2) return _mm256_fmadd_ps(x, y, z);
  if constexpr (kind == 3) return _mm_fmadd_ps(x, y, z);
#endif
#if defined(__aarch64__)
  if constexpr (kind == 4) return vfmaq_f32(z, x, y);
#endif
  return x * y + z;  // unreachable: kXsimdF32Fused<A> is false then
}

template <class A>
struct GemmF32XsimdKernel {
  using B = xsimd::batch<float, A>;
  static constexpr int kW = static_cast<int>(B::size);
  static constexpr int kRows = 4, kPanels = 1;
  static constexpr Index kDepthBlock = 0;
  template <int MR, int NV>
  static void tile(const GemmF32Problem& p, const GemmF32Tile& t) noexcept {
    constexpr Index kP = PackedPanelsF32::kPanel;
    const Index nc = std::min<Index>(kP * NV, p.n - t.panel0 * kP);
    batches<MR, static_cast<int>(kP) / kW * NV>(p, t, static_cast<int>((nc + kW - 1) / kW));
  }

  // The tile over its first `nb` batches of columns (a last panel of few columns costs few).
  template <int MR, int kV>
  static void batches(const GemmF32Problem& p, const GemmF32Tile& t, int nb) noexcept {
    if constexpr (kV > 1)
      if (nb < kV) {
        batches<MR, kV - 1>(p, t, nb);
        return;
      }
    const Index i0 = t.i0, panel0 = t.panel0;
    constexpr Index kP = PackedPanelsF32::kPanel;
    B acc[MR][kV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < kV; ++v) acc[r][v] = B(0.0F);
    const float* a = p.a + i0 * p.lda;
    const Index lda = p.lda, ps = p.b.panel_floats(), kk = p.k;
    const float* b = p.b.panel(panel0);
    for (Index k = 0; k < kk; ++k) {
      B bv[kV];
#pragma GCC unroll 16
      for (int v = 0; v < kV; ++v) {
        const int col = v * kW;
        bv[v] = B::load_unaligned(b + (col / kP) * ps + k * kP + col % kP);
      }
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const B av(a[r * lda + k]);
#pragma GCC unroll 16
        for (int v = 0; v < kV; ++v) acc[r][v] = fused_fma(av, bv[v], acc[r][v]);
      }
    }
    alignas(64) float tmp[kV * kW];
    const Index j0 = panel0 * kP, nc = std::min<Index>(kV * kW, p.n - j0);
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < kV; ++v) acc[r][v].store_aligned(tmp + v * kW);
      float* out = p.c + (i0 + r) * p.ldc + j0;
      const float* res = p.residual != nullptr ? p.residual + (i0 + r) * p.ldr + j0 : nullptr;
      for (Index c = 0; c < nc; ++c) {
        float x = tmp[c];
        if (p.bias != nullptr) x = x + p.bias[j0 + c];
        if (res != nullptr) x = x + res[c];
        out[c] = x;
      }
    }
  }
};

template <class A, class Policy>
void gemm_f32_run(arch::Xsimd<A>, const GemmF32Problem& p, Policy& policy) {
  if constexpr (kXsimdF32Fused<A>)
    gemm_f32_parallel<GemmF32XsimdKernel<A>>(p, policy);
  else
    gemm_f32_parallel<GemmF32ScalarKernel>(p, policy);
}

}  // namespace vitc::kernels::detail
