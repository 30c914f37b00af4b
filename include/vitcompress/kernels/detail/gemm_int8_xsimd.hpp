// SPDX-License-Identifier: Apache-2.0
#pragma once
// int8 GEMM, portable xsimd path (any xsimd 8.1 arch: SSE4, AVX2, AVX-512BW, NEON...).
//
// xsimd 8.1 has no widening multiply-add, so the kernel works in int16 lanes: each int32 lane of
// a packed B group holds (b0, b1, b2, b3) of one column. Viewed as int16, the low byte of each
// int16 lane is k even, the high byte k odd: `(x << 8) >> 8` and `x >> 8` sign-extend them. The
// matching activations are pre-packed as int16 pairs (a0, a2) and (a1, a3) per int32 lane. Each
// int16 product is exact (|a| <= 255, |b| <= 128: at most 32640), and the two int16 products of
// an int32 lane are sign-extended and added in int32, so nothing wraps or saturates.

#include <bit>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"

// GCC 12 reports a false -Wmaybe-uninitialized inside its own _mm512_srai_epi32 (the
// _mm512_undefined_epi32 pass-through) when xsimd shifts int32 batches on AVX-512.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace vitc::kernels::detail {

static_assert(std::endian::native == std::endian::little,
              "the xsimd int8 GEMM reads byte pairs as little-endian int16 lanes");

// a_pairs[i][g] = {(a0, a2), (a1, a3)} of row i, k-group g, as two int16 halves of an int32;
// a is A − 0 (raw values; the zero point is corrected with the column sums).
template <class Problem>
void pack_activation_pairs(const Problem& p, std::int32_t* dst, Index kgroups) noexcept {
  auto pair = [](std::int32_t lo, std::int32_t hi) {
    return static_cast<std::int32_t>((static_cast<std::uint32_t>(lo) & 0xffffu) |
                                     (static_cast<std::uint32_t>(hi) << 16));
  };
  for (Index i = 0; i < p.m; ++i) {
    for (Index g = 0; g < kgroups; ++g) {
      std::int32_t v[4];
      for (Index j = 0; j < 4; ++j) {
        const Index k = 4 * g + j;
        v[j] = k < p.k ? static_cast<std::int32_t>(p.a_at(i, k)) : 0;
      }
      dst[(i * kgroups + g) * 2] = pair(v[0], v[2]);
      dst[(i * kgroups + g) * 2 + 1] = pair(v[1], v[3]);
    }
  }
}

template <class A, int MR>
void gemm_x8s8_tile_c4_xsimd(const std::int32_t* a_pairs, Index kgroups, const std::int8_t* b,
                             const std::int32_t* colsum, std::int32_t offset, std::int32_t* dst,
                             Index ldd, Index ncols) noexcept {
  using B32 = xsimd::batch<std::int32_t, A>;
  using B16 = xsimd::batch<std::int16_t, A>;
  constexpr int kLanes = static_cast<int>(B32::size);
  constexpr int kVecs = 16 / kLanes;  // int32 vectors per 16-column k-group
  static_assert(kVecs >= 1 && 16 % kLanes == 0, "a 16-column panel must be whole vectors");
  B32 acc[MR][kVecs];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < kVecs; ++q) acc[r][q] = B32(0);
  for (Index g = 0; g < kgroups; ++g) {
    B16 even[kVecs], odd[kVecs];
    for (int q = 0; q < kVecs; ++q) {
      const B16 x = xsimd::bitwise_cast<B16>(
          B32::load_aligned(reinterpret_cast<const std::int32_t*>(b + g * 64) + q * kLanes));
      even[q] = (x << 8) >> 8;
      odd[q] = x >> 8;
    }
    for (int r = 0; r < MR; ++r) {
      const std::int32_t* ap = a_pairs + (r * kgroups + g) * 2;
      const B16 ae = xsimd::bitwise_cast<B16>(B32(ap[0]));
      const B16 ao = xsimd::bitwise_cast<B16>(B32(ap[1]));
      for (int q = 0; q < kVecs; ++q) {
        const B32 pe = xsimd::bitwise_cast<B32>(even[q] * ae);
        const B32 po = xsimd::bitwise_cast<B32>(odd[q] * ao);
        acc[r][q] += ((pe << 16) >> 16) + (pe >> 16) + ((po << 16) >> 16) + (po >> 16);
      }
    }
  }
  const B32 off(offset);
  alignas(64) std::int32_t lane[kLanes];
  for (int q = 0; q < kVecs; ++q) {
    const B32 corr = off * B32::load_unaligned(colsum + q * kLanes);
    const Index left = ncols - q * kLanes;
    for (int r = 0; r < MR; ++r) {
      const B32 v = acc[r][q] - corr;
      if (left >= kLanes) {
        v.store_unaligned(dst + r * ldd + q * kLanes);
      } else if (left > 0) {
        v.store_aligned(lane);
        for (Index j = 0; j < left; ++j) dst[r * ldd + q * kLanes + j] = lane[j];
      }
    }
  }
}

template <class A, class AT, class OutT, class Pipeline>
void gemm_int8_xsimd_panels(const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                            const std::int32_t* a_pairs, Index p0, Index p1) noexcept {
  constexpr Index kMR = 4;
  alignas(64) std::int32_t tile[kMR * 16];
  const PackedWeightsInt8& b = *p.b;
  const Index kg = b.kgroups();
  for (Index q = p0; q < p1; ++q) {
    const Index n0 = q * 16, ncols = std::min<Index>(16, p.n - n0);
    for (Index m0 = 0; m0 < p.m; m0 += kMR) {
      const Index mr = std::min(kMR, p.m - m0);
      const std::int32_t* ap = a_pairs + m0 * kg * 2;
      const std::int32_t* cs = b.column_sums() + n0;
      const std::int32_t off = p.a_zero_point;
      switch (mr) {
        case 4:
          gemm_x8s8_tile_c4_xsimd<A, 4>(ap, kg, b.panel(q), cs, off, tile, 16, ncols);
          break;
        case 3:
          gemm_x8s8_tile_c4_xsimd<A, 3>(ap, kg, b.panel(q), cs, off, tile, 16, ncols);
          break;
        case 2:
          gemm_x8s8_tile_c4_xsimd<A, 2>(ap, kg, b.panel(q), cs, off, tile, 16, ncols);
          break;
        default:
          gemm_x8s8_tile_c4_xsimd<A, 1>(ap, kg, b.panel(q), cs, off, tile, 16, ncols);
          break;
      }
      for (Index r = 0; r < mr; ++r)
        apply_pipeline_row(pipeline, tile + r * 16, n0, ncols,
                           p.c + (m0 + r) * p.c_row_stride + n0);
    }
  }
}

template <class A, class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_run(arch::Xsimd<A>, const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  static_assert(A::supported(), "this xsimd arch is not enabled by the compile flags");
  const Index kg = p.b->kgroups();
  auto pairs = scratch_in<std::int32_t>(p.ws, 0, p.m * kg * 2);
  pack_activation_pairs(p, pairs.get(), kg);
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int8_xsimd_panels<A>(p, pipeline, pairs.get(), p0, p1);
  });
}

}  // namespace vitc::kernels::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
