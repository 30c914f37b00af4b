// SPDX-License-Identifier: Apache-2.0
#pragma once
// The scalar fp32 GEMM: the definition (gemm_f32_reference_element's order) in plain C++, with
// std::fma so that each multiply-add is one rounding, as in every SIMD path.

#include <cmath>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_f32_common.hpp"

namespace vitc::kernels::detail {

struct GemmF32ScalarKernel {
  static constexpr int kRows = 4, kPanels = 1;
  static constexpr Index kDepthBlock = 0;
  template <int MR, int NV>
  static void tile(const GemmF32Problem& p, const GemmF32Tile& t) noexcept {
    const Index i0 = t.i0, panel0 = t.panel0;
    constexpr Index kP = PackedPanelsF32::kPanel;
    for (int v = 0; v < NV; ++v) {
      const Index j0 = (panel0 + v) * kP, nc = std::min(kP, p.n - j0);
      const float* b = p.b.panel(panel0 + v);
      float acc[MR][kP] = {};
      for (Index k = 0; k < p.k; ++k)
        for (int r = 0; r < MR; ++r) {
          const float a = p.a[(i0 + r) * p.lda + k];
          for (Index c = 0; c < kP; ++c) acc[r][c] = std::fma(a, b[k * kP + c], acc[r][c]);
        }
      for (int r = 0; r < MR; ++r) {
        float* out = p.c + (i0 + r) * p.ldc + j0;
        const float* res = p.residual != nullptr ? p.residual + (i0 + r) * p.ldr + j0 : nullptr;
        for (Index c = 0; c < nc; ++c) {
          float x = acc[r][c];
          if (p.bias != nullptr) x = x + p.bias[j0 + c];
          if (res != nullptr) x = x + res[c];
          out[c] = x;
        }
      }
    }
  }
};

template <class Policy>
void gemm_f32_run(arch::Scalar, const GemmF32Problem& p, Policy& policy) {
  gemm_f32_parallel<GemmF32ScalarKernel>(p, policy);
}

}  // namespace vitc::kernels::detail
