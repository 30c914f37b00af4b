// SPDX-License-Identifier: Apache-2.0
#pragma once
// Internals shared by the 4-bit GEMM paths: the problem, activation packing with per-group row
// sums, and the scalar reference.
//
// With packed activations a_p = a − d (d = 128 for uint8 A on the x86 paths, else 0) and the
// stored nibble u = w + 8, the exact partial sum of group g is
//     P_g[m][n] = Σ_{k in g} (a − za)·w = Σ a_p·u − 8·rowsum_g(a_p)[m] + (d − za)·colsum_g(w)[n],
// so the arch kernels start each accumulator at the last two terms and add Σ a_p·u.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/packed_weights_int4.hpp"

namespace vitc::kernels::detail {

// The "pipeline" of a grouped GEMM: C = fma(Σ_g scale_g·P_g, a_scale, bias[n]) in float, the sum
// over g in order with one fma per group.
struct Int4GroupedEpilogue {
  float a_scale = 1.0f;
  const float* bias = nullptr;  // panels·16 floats (zero-padded), or null for no bias
};

template <class AT, class OutT>
struct GemmInt4Problem {
  const AT* a = nullptr;
  Index a_row_stride = 0, a_col_stride = 1;
  std::int32_t a_zero_point = 0;
  Index m = 0, k = 0, n = 0;
  const PackedWeightsInt4* b = nullptr;
  OutT* c = nullptr;
  Index c_row_stride = 0;
  GemmWorkspace* ws = nullptr;  // the caller's scratch, or null (the call allocates its own)

  [[nodiscard]] AT a_at(Index i, Index j) const noexcept {
    return a[i * a_row_stride + j * a_col_stride];
  }
};

// Signed or raw activation bytes, rows of ld = kblocks·8 bytes (zero-padded), and, unless rowsums
// is null, rowsums[i·groups + g] = Σ_{k in g} a_p[i][k] with a_p = a XOR flip read as AT' (flip =
// 0x80 turns uint8 a into int8 a − 128).
template <class PackedT, class AT, class OutT>
void pack_int4_activations(const GemmInt4Problem<AT, OutT>& p, PackedT* dst, Index ld,
                           std::uint8_t flip, std::int32_t* rowsums) noexcept {
  // Locals, not p's fields, inside the loops: byte stores may alias them (see pack_activations).
  const Index groups = p.b->groups();
  const Index gsize = p.b->group_size() == 0 ? std::max<Index>(p.k, 1) : p.b->group_size();
  const auto* a = reinterpret_cast<const std::uint8_t*>(p.a);
  const Index m = p.m, k = p.k, rs = p.a_row_stride, cs = p.a_col_stride;
  for (Index i = 0; i < m; ++i) {
    PackedT* row = dst + i * ld;
    const std::uint8_t* src = a + i * rs;
    if (cs == 1) {
      for (Index j = 0; j < k; ++j) row[j] = static_cast<PackedT>(src[j] ^ flip);
    } else {
      for (Index j = 0; j < k; ++j) row[j] = static_cast<PackedT>(src[j * cs] ^ flip);
    }
    for (Index j = k; j < ld; ++j) row[j] = PackedT{0};
    if (rowsums == nullptr) continue;
    for (Index g = 0; g < groups; ++g) {
      std::int32_t sum = 0;
      const Index k1 = std::min(k, (g + 1) * gsize);
      for (Index j = g * gsize; j < k1; ++j) sum += row[j];
      rowsums[i * groups + g] = sum;
    }
  }
}

// The definition: P_g = Σ_{k in g} (a − za)·w from the packed nibbles.
template <class AT, class OutT>
[[nodiscard]] std::int32_t int4_reference_partial(const GemmInt4Problem<AT, OutT>& p, Index i,
                                                  Index j, Index k0, Index k1) noexcept {
  std::int32_t acc = 0;
  for (Index k = k0; k < k1; ++k)
    acc += (static_cast<std::int32_t>(p.a_at(i, k)) - p.a_zero_point) * p.b->at(k, j);
  return acc;
}

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int4_run(arch::Scalar, const GemmInt4Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  const PackedWeightsInt4& b = *p.b;
  constexpr Index kPanel = PackedWeightsInt4::kPanel;
  policy.parallel_for(b.panels(), 1, [&](Index p0, Index p1) {
    const Index j_end = std::min(p.n, p1 * kPanel);
    for (Index i = 0; i < p.m; ++i)
      for (Index j = p0 * kPanel; j < j_end; ++j) {
        OutT& out = p.c[i * p.c_row_stride + j];
        if constexpr (std::is_same_v<Pipeline, Int4GroupedEpilogue>) {
          float acc = 0.0f;
          for (Index g = 0; g < b.groups(); ++g) {
            const Index k0 = g * b.group_size(), k1 = std::min(p.k, k0 + b.group_size());
            acc = std::fma(static_cast<float>(int4_reference_partial(p, i, j, k0, k1)),
                           b.scale(g, j), acc);
          }
          out = std::fma(acc, pipeline.a_scale, pipeline.bias ? pipeline.bias[j] : 0.0f);
        } else if (b.integer_groups()) {
          std::int32_t acc = 0;  // exact: PackedWeightsInt4 bounds K·2040·max m below 2^31
          for (Index g = 0; g < b.groups(); ++g) {
            const Index k0 = g * b.group_size(), k1 = std::min(p.k, k0 + b.group_size());
            acc += b.multiplier(g, j) * int4_reference_partial(p, i, j, k0, k1);
          }
          out = eval_pipeline(pipeline, acc, j);
        } else {
          out = eval_pipeline(pipeline, int4_reference_partial(p, i, j, 0, p.k), j);
        }
      }
  });
}

}  // namespace vitc::kernels::detail
