// SPDX-License-Identifier: Apache-2.0
#pragma once
// 4-bit GEMM, portable xsimd path. In int16 lanes of a packed block, `x & 0x0F0F` and
// `(x >> 4) & 0x0F0F` hold the nibbles of the two k-groups; `& 0x00FF` and `>> 8` split them into
// even and odd k. Products with the activation pairs (raw a, |a| <= 255) are at most 15·255, and
// the four products of an int16 lane sum to at most 15300: exact in int16, then widened to int32.
// Grouped sums go through std::fma on stored partials so that every xsimd arch (with or without
// hardware FMA) rounds exactly as the scalar reference.

#include <cmath>

#include "vitcompress/kernels/detail/gemm_int4_common.hpp"
#include "vitcompress/kernels/detail/gemm_int8_xsimd.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see gemm_int8_xsimd.hpp
#endif

namespace vitc::kernels::detail {

// dst[r][0..16) = Σ_{blocks [b0, b1)} a·u − 8·rowsum + off·colsum (int32), MR rows, one panel.
template <class A, int MR>
void gemm_x8u4_tile_c8_xsimd(const std::int32_t* a_pairs, Index kgroups, const std::uint8_t* b,
                             Index b0, Index b1, const std::int32_t* colsum, std::int32_t off,
                             const std::int32_t* rowsums, Index rs_stride, std::int32_t* dst,
                             Index ldd) noexcept {
  using B32 = xsimd::batch<std::int32_t, A>;
  using B16 = xsimd::batch<std::int16_t, A>;
  constexpr int kLanes = static_cast<int>(B32::size);
  constexpr int kVecs = 16 / kLanes;
  static_assert(kVecs >= 1 && 16 % kLanes == 0, "a 16-column panel must be whole vectors");
  B32 acc[MR][kVecs];
  for (int q = 0; q < kVecs; ++q) {
    const B32 cs = B32(off) * B32::load_unaligned(colsum + q * kLanes);
    for (int r = 0; r < MR; ++r) acc[r][q] = cs - B32(8 * rowsums[r * rs_stride]);
  }
  const B16 nib(static_cast<std::int16_t>(0x0F0F)), low(static_cast<std::int16_t>(0x00FF));
  for (Index bk = b0; bk < b1; ++bk) {
    B16 le[kVecs], lo_[kVecs], he[kVecs], ho[kVecs];
    for (int q = 0; q < kVecs; ++q) {
      const B16 x = xsimd::bitwise_cast<B16>(
          B32::load_aligned(reinterpret_cast<const std::int32_t*>(b + bk * 64) + q * kLanes));
      const B16 l = x & nib, h = (x >> 4) & nib;
      le[q] = l & low;
      lo_[q] = l >> 8;
      he[q] = h & low;
      ho[q] = h >> 8;
    }
    for (int r = 0; r < MR; ++r) {
      const std::int32_t* ap = a_pairs + (r * kgroups + 2 * bk) * 2;
      const B16 ae0 = xsimd::bitwise_cast<B16>(B32(ap[0])),
                ao0 = xsimd::bitwise_cast<B16>(B32(ap[1]));
      const B16 ae1 = xsimd::bitwise_cast<B16>(B32(ap[2])),
                ao1 = xsimd::bitwise_cast<B16>(B32(ap[3]));
      for (int q = 0; q < kVecs; ++q) {
        const B32 s =
            xsimd::bitwise_cast<B32>(le[q] * ae0 + lo_[q] * ao0 + he[q] * ae1 + ho[q] * ao1);
        acc[r][q] += ((s << 16) >> 16) + (s >> 16);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < kVecs; ++q) acc[r][q].store_unaligned(dst + r * ldd + q * kLanes);
}

template <class A, class AT, class OutT, class Pipeline>
void gemm_int4_xsimd_panels(const GemmInt4Problem<AT, OutT>& p, const Pipeline& pipeline,
                            const std::int32_t* a_pairs, const std::int32_t* rowsums, Index p0,
                            Index p1) noexcept {
  constexpr bool kGrouped = std::is_same_v<Pipeline, Int4GroupedEpilogue>;
  constexpr Index kMR = 4;
  alignas(64) std::int32_t tile[kMR * 16], itile[kMR * 16];
  alignas(64) float ftile[kMR * 16];
  const PackedWeightsInt4& b = *p.b;
  const bool int_groups = !kGrouped && b.integer_groups();  // Σ_g m·P_g in int32
  const Index kg = 2 * b.kblocks(), groups = b.groups();
  const Index gblocks = kGrouped || int_groups ? b.group_size() / 8 : b.kblocks();
  const std::int32_t off = -p.a_zero_point;
  for (Index q = p0; q < p1; ++q) {
    const Index n0 = q * 16, ncols = std::min<Index>(16, p.n - n0);
    for (Index m0 = 0; m0 < p.m; m0 += kMR) {
      const Index mr = std::min(kMR, p.m - m0);
      if constexpr (kGrouped) std::fill(ftile, ftile + kMR * 16, 0.0f);
      if (int_groups) std::fill(itile, itile + kMR * 16, 0);
      for (Index g = 0; g < (kGrouped || int_groups ? groups : 1); ++g) {
        const Index b0 = g * gblocks, b1 = std::min(b.kblocks(), b0 + gblocks);
        const std::int32_t* ap = a_pairs + m0 * kg * 2;
        const std::int32_t* cs = b.group_column_sums(g) + n0;
        const std::int32_t* rs = rowsums + m0 * groups + g;
        switch (mr) {
          case 4:
            gemm_x8u4_tile_c8_xsimd<A, 4>(ap, kg, b.panel(q), b0, b1, cs, off, rs, groups, tile,
                                          16);
            break;
          case 3:
            gemm_x8u4_tile_c8_xsimd<A, 3>(ap, kg, b.panel(q), b0, b1, cs, off, rs, groups, tile,
                                          16);
            break;
          case 2:
            gemm_x8u4_tile_c8_xsimd<A, 2>(ap, kg, b.panel(q), b0, b1, cs, off, rs, groups, tile,
                                          16);
            break;
          default:
            gemm_x8u4_tile_c8_xsimd<A, 1>(ap, kg, b.panel(q), b0, b1, cs, off, rs, groups, tile,
                                          16);
            break;
        }
        if constexpr (kGrouped) {
          const float* sc = b.padded_scales(g) + n0;
          for (Index r = 0; r < mr; ++r)
            for (Index j = 0; j < 16; ++j)
              ftile[r * 16 + j] =
                  std::fma(static_cast<float>(tile[r * 16 + j]), sc[j], ftile[r * 16 + j]);
        } else if (int_groups) {
          const std::int32_t* mu = b.padded_multipliers(g) + n0;
          for (Index r = 0; r < mr; ++r)
            for (Index j = 0; j < 16; ++j) itile[r * 16 + j] += tile[r * 16 + j] * mu[j];
        }
      }
      for (Index r = 0; r < mr; ++r) {
        OutT* out = p.c + (m0 + r) * p.c_row_stride + n0;
        if constexpr (kGrouped) {
          for (Index j = 0; j < ncols; ++j)
            out[j] = std::fma(ftile[r * 16 + j], pipeline.a_scale,
                              pipeline.bias ? pipeline.bias[n0 + j] : 0.0f);
        } else {
          apply_pipeline_row(pipeline, (int_groups ? itile : tile) + r * 16, n0, ncols, out);
        }
      }
    }
  }
}

template <class A, class AT, class OutT, class Pipeline, class Policy>
void gemm_int4_run(arch::Xsimd<A>, const GemmInt4Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  static_assert(A::supported(), "this xsimd arch is not enabled by the compile flags");
  const PackedWeightsInt4& b = *p.b;
  const Index kg = 2 * b.kblocks();
  auto pairs = scratch_in<std::int32_t>(p.ws, 0, p.m * kg * 2);
  pack_activation_pairs(p, pairs.get(), kg);
  auto rowsums = scratch_in<std::int32_t>(p.ws, 2, p.m * b.groups());
  const Index gsize = b.group_size() == 0 ? std::max<Index>(p.k, 1) : b.group_size();
  for (Index i = 0; i < p.m; ++i)
    for (Index g = 0; g < b.groups(); ++g) {
      std::int32_t sum = 0;
      for (Index k = g * gsize; k < std::min(p.k, (g + 1) * gsize); ++k)
        sum += static_cast<std::int32_t>(p.a_at(i, k));
      rowsums[static_cast<std::size_t>(i * b.groups() + g)] = sum;
    }
  policy.parallel_for(b.panels(), 1, [&](Index p0, Index p1) {
    gemm_int4_xsimd_panels<A>(p, pipeline, pairs.get(), rowsums.get(), p0, p1);
  });
}

}  // namespace vitc::kernels::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
