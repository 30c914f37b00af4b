// SPDX-License-Identifier: Apache-2.0
#pragma once
// 4-bit GEMM, AVX-512 VNNI path. One 64-byte load holds 8 k of 16 columns; `x & 0x0F` and
// `(x >> 4) & 0x0F` are two int8-layout k-groups of nibbles u = w + 8 in [0, 15]. vpdpbusd takes
// them as its unsigned operand and the signed activations (uint8 A packed as a − 128) as the
// broadcast signed operand, so no sign extension is needed; the accumulators start at
// (d − za)·colsum − 8·rowsum (detail/gemm_int4_common.hpp).

#include "vitcompress/kernels/detail/gemm_int4_common.hpp"
#include "vitcompress/kernels/detail/output_stage_simd.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

#include <array>
#include <utility>

// GCC 12 reports a false -Wmaybe-uninitialized inside its own _mm512_cvtepi32_ps (the
// _mm512_undefined_ps pass-through operand).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace vitc::kernels::detail {

template <int R, int NV, int... V>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void vnni4_row(std::integer_sequence<int, V...>,
                                                         __m512i* acc, const __m512i* w,
                                                         const std::int8_t* a, Index lda) noexcept {
  std::int32_t a4;
  std::memcpy(&a4, a + R * lda, 4);
  const __m512i av = _mm512_set1_epi32(a4);
  ((acc[R * NV + V] = _mm512_dpbusd_epi32(acc[R * NV + V], w[V], av)), ...);
}

// acc += Σ over the 8 k of block `bk` of a_p·u.
template <int NV, int... R, int... V>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void vnni4_block(std::integer_sequence<int, R...>,
                                                           std::integer_sequence<int, V...> vs,
                                                           __m512i* acc, const std::int8_t* a,
                                                           Index lda, const std::uint8_t* b,
                                                           Index panel_bytes, Index bk) noexcept {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i x[NV] = {_mm512_load_si512(b + V * panel_bytes + bk * 64)...};
  const __m512i lo[NV] = {_mm512_and_si512(x[V], mask)...};
  (vnni4_row<R, NV>(vs, acc, lo, a + bk * 8, lda), ...);
  const __m512i hi[NV] = {_mm512_and_si512(_mm512_srli_epi16(x[V], 4), mask)...};
  (vnni4_row<R, NV>(vs, acc, hi, a + bk * 8 + 4, lda), ...);
}

// acc[r][v] = colcorr[v] − 8·rowsum[r], colcorr = (d − za)·colsum precomputed per call.
template <int MR, int NV>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void vnni4_init(__m512i* acc, const std::int32_t* colcorr,
                                                          const std::int32_t* rowsums,
                                                          Index rs_stride) noexcept {
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i)
    acc[i] = _mm512_sub_epi32(_mm512_loadu_si512(colcorr + 16 * (i % NV)),
                              _mm512_set1_epi32(8 * rowsums[(i / NV) * rs_stride]));
}

struct Int4TileArgs {
  const std::int8_t* a;
  Index lda;
  const std::uint8_t* b;
  Index panel_bytes, kblocks;
  const std::int32_t* rowsums;  // of the tile's first row; rows are rs_stride apart
  Index rs_stride;
  // (d − za)·colsum_g of the tile's first column, groups `group_stride` apart; likewise scales.
  const std::int32_t* colcorr;
  const float* scales;
  const std::int32_t* mults;  // integer groups: m(g, n)·0x10001, as scales; else null
  Index group_stride, group_blocks, groups;
  float a_scale;
  const float* bias;  // null for none
  void* dst;
  Index ldd;
};

// Per channel: int32 dst[r][0 .. 16·NV) = P[r][·] (exact).
template <int MR, int NV>
VITC_TARGET_AVX512VNNI void gemm_s8u4_tile_c8_vnni(const Int4TileArgs& t) noexcept {
  __m512i acc[MR * NV];
  vnni4_init<MR, NV>(acc, t.colcorr, t.rowsums, t.rs_stride);
  for (Index bk = 0; bk < t.kblocks; ++bk)
    vnni4_block<NV>(std::make_integer_sequence<int, MR>{}, std::make_integer_sequence<int, NV>{},
                    acc, t.a, t.lda, t.b, t.panel_bytes, bk);
  auto* dst = static_cast<std::int32_t*>(t.dst);
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i)
    _mm512_storeu_si512(dst + (i / NV) * t.ldd + 16 * (i % NV), acc[i]);
}

// Grouped: float dst[r][0 .. 16·NV) = fma(Σ_g fma-chain of scale_g·P_g, a_scale, bias).
template <int MR, int NV>
VITC_TARGET_AVX512VNNI void gemm_s8u4_tile_c8_grouped_vnni(const Int4TileArgs& t) noexcept {
  __m512 facc[MR * NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i) facc[i] = _mm512_setzero_ps();
  for (Index g = 0; g < t.groups; ++g) {
    __m512i acc[MR * NV];
    vnni4_init<MR, NV>(acc, t.colcorr + g * t.group_stride, t.rowsums + g, t.rs_stride);
    const Index b0 = g * t.group_blocks, b1 = std::min(t.kblocks, b0 + t.group_blocks);
    for (Index bk = b0; bk < b1; ++bk)
      vnni4_block<NV>(std::make_integer_sequence<int, MR>{}, std::make_integer_sequence<int, NV>{},
                      acc, t.a, t.lda, t.b, t.panel_bytes, bk);
    const float* sc = t.scales + g * t.group_stride;
#pragma GCC unroll 32
    for (int i = 0; i < MR * NV; ++i)
      facc[i] =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), _mm512_loadu_ps(sc + 16 * (i % NV)), facc[i]);
  }
  const __m512 as = _mm512_set1_ps(t.a_scale);
  auto* dst = static_cast<float*>(t.dst);
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i) {
    const __m512 bias = t.bias ? _mm512_loadu_ps(t.bias + 16 * (i % NV)) : _mm512_setzero_ps();
    _mm512_storeu_ps(dst + (i / NV) * t.ldd + 16 * (i % NV), _mm512_fmadd_ps(facc[i], as, bias));
  }
}

using Int4TileFn = void (*)(const Int4TileArgs&);

template <bool kGrouped, int I>
constexpr Int4TileFn vnni4_tile_entry() {
  constexpr int mr = I / 8 + 1, nv = I % 8 + 1;
  if constexpr (!kGrouped && mr * nv <= 24)
    return &gemm_s8u4_tile_c8_vnni<mr, nv>;
  else if constexpr (kGrouped && mr * nv <= 12)
    return &gemm_s8u4_tile_c8_grouped_vnni<mr, nv>;
  else
    return nullptr;
}
template <bool kGrouped, int... I>
constexpr std::array<Int4TileFn, 64> vnni4_tile_table(std::integer_sequence<int, I...>) {
  return {vnni4_tile_entry<kGrouped, I>()...};
}
inline constexpr std::array<Int4TileFn, 64> kVnni4Tiles =
    vnni4_tile_table<false>(std::make_integer_sequence<int, 64>{});
inline constexpr std::array<Int4TileFn, 64> kVnni4GroupedTiles =
    vnni4_tile_table<true>(std::make_integer_sequence<int, 64>{});

// Row block MR and panel block NV for M rows (per-channel and grouped tiles).
inline void int4_vnni_plan(Index m, bool grouped, Index& mr, Index& nv) noexcept {
  if (!grouped) {
    mr = m >= 4 ? 8 : std::max<Index>(m, 1);
    nv = m >= 4 ? 3 : (m == 1 ? 8 : (m == 2 ? 6 : 4));
  } else {
    mr = m >= 4 ? 4 : std::max<Index>(m, 1);
    nv = m >= 4 ? 3 : (m == 1 ? 8 : (m == 2 ? 6 : 4));
  }
}

// Shared driver of the x86 int4 paths: panels [p0, p1) in blocks of nv, rows in blocks of mr.
template <int kSimdWidth, class Tiles, class AT, class OutT, class Pipeline>
VITC_ALWAYS_INLINE void int4_drive_panels(const Tiles& tiles, int tiles_per_row,
                                          const GemmInt4Problem<AT, OutT>& p,
                                          const Pipeline& pipeline, Int4TileArgs base, Index mr0,
                                          Index nv0, Index p0, Index p1) noexcept {
  constexpr bool kGrouped = std::is_same_v<Pipeline, Int4GroupedEpilogue>;
  constexpr bool kDirect =
      kGrouped || (std::is_same_v<Pipeline, RawInt32> && std::is_same_v<OutT, std::int32_t>);
  using Acc = std::conditional_t<kGrouped, float, std::int32_t>;
  alignas(64) Acc tile[24 * 16];
  const PackedWeightsInt4& b = *p.b;
  const Index groups = b.groups();
  for (Index q = p0; q < p1; q += nv0) {
    const Index nv = std::min(nv0, p1 - q);
    const Index n0 = q * 16, ncols = std::min(nv * 16, p.n - n0);
    for (Index m0 = 0; m0 < p.m; m0 += mr0) {
      const Index mr = std::min(mr0, p.m - m0);
      const auto fn = tiles[static_cast<std::size_t>((mr - 1) * tiles_per_row + (nv - 1))];
      VITC_DCHECK(fn != nullptr);
      const bool direct = kDirect && ncols == nv * 16;
      Int4TileArgs t = base;
      t.a = base.a + m0 * base.lda;
      t.b = b.panel(q);
      t.rowsums = base.rowsums + m0 * groups;
      t.colcorr = base.colcorr + n0;
      t.scales = base.scales + n0;
      t.mults = base.mults ? base.mults + n0 : nullptr;
      t.bias = base.bias ? base.bias + n0 : nullptr;
      t.dst =
          direct ? static_cast<void*>(p.c + m0 * p.c_row_stride + n0) : static_cast<void*>(tile);
      t.ldd = direct ? p.c_row_stride : nv * 16;
      fn(t);
      if (!direct) {
        OutT* out = p.c + m0 * p.c_row_stride + n0;
        if constexpr (kGrouped)
          for (Index r = 0; r < mr; ++r)
            std::copy(tile + r * nv * 16, tile + r * nv * 16 + ncols, out + r * p.c_row_stride);
        else
          apply_pipeline_tile_simd<kSimdWidth>(pipeline, tile, nv * 16, mr, n0, ncols, out,
                                               p.c_row_stride);
      }
    }
  }
}

template <class AT, class OutT, class Pipeline>
VITC_TARGET_AVX512VNNI void gemm_int4_vnni_panels(const GemmInt4Problem<AT, OutT>& p,
                                                  const Pipeline& pipeline,
                                                  const Int4TileArgs& base, Index mr, Index nv,
                                                  Index p0, Index p1) noexcept {
  constexpr bool kGrouped = std::is_same_v<Pipeline, Int4GroupedEpilogue>;
  int4_drive_panels<512>(kGrouped ? kVnni4GroupedTiles : kVnni4Tiles, 8, p, pipeline, base, mr, nv,
                         p0, p1);
}

// Buffers an x86 int4 call owns: packed activations, their row sums, column corrections.
struct Int4Scratch {
  ScratchRef<std::uint8_t> a;
  ScratchRef<std::int32_t> rowsums, colcorr;
};

// Fills the tile arguments common to every x86 int4 path and allocates the packed A and its row
// sums in `s`; the caller packs rows with int4_pack_rows (all at once, or per thread).
template <class AT, class OutT, class Pipeline>
Int4TileArgs int4_x86_setup(const GemmInt4Problem<AT, OutT>& p, const Pipeline& pipeline,
                            Int4Scratch& s) {
  const PackedWeightsInt4& b = *p.b;
  Int4TileArgs t{};
  t.lda = b.kblocks() * 8;
  t.kblocks = b.kblocks();
  t.panel_bytes = b.panel_bytes();
  s.a = scratch_in<std::uint8_t>(p.ws, 0, p.m * t.lda);
  s.rowsums = scratch_in<std::int32_t>(p.ws, 2, p.m * b.groups());
  t.group_stride = b.panels() * 16;
  // Integer groups need one correction per column; the other tiles one per group and column.
  const Index corr_size = b.integer_groups() ? t.group_stride : b.groups() * t.group_stride;
  s.colcorr = scratch_in<std::int32_t>(p.ws, 1, corr_size);
  const std::int32_t off = (std::is_same_v<AT, std::uint8_t> ? 128 : 0) - p.a_zero_point;
  t.mults = nullptr;
  if (b.integer_groups()) {
    // The integer-group tile multiplies unsigned activations a_u = a_p + 128 by signed weights,
    // so P_g = Σ a_u·w + (d − 128 − za)·colsum_g: one correction per column, from the weights'
    // Σ_g m_g·colsum_g. It and Σ m·a_u·w may each exceed int32 where their sum cannot: taken
    // modulo 2^32 (C++20 conversion), the tile's wrapping int32 adds land on the exact result.
    t.mults = b.padded_multiplier_pairs(0);
    const std::int32_t* wcs = b.weighted_column_sums();
    for (Index n = 0; n < t.group_stride; ++n)
      s.colcorr[static_cast<std::size_t>(n)] =
          static_cast<std::int32_t>(std::int64_t{off - 128} * wcs[n]);
  } else {
    const std::int32_t* cs = b.group_column_sums(0);
    for (Index i = 0; i < corr_size; ++i) s.colcorr[static_cast<std::size_t>(i)] = off * cs[i];
  }
  t.a = reinterpret_cast<const std::int8_t*>(s.a.get());
  t.rowsums = s.rowsums.get();
  t.rs_stride = b.groups();
  t.colcorr = s.colcorr.get();
  t.scales = b.padded_scales(0);
  t.groups = b.groups();
  t.group_blocks = b.group_size() / 8;
  if constexpr (std::is_same_v<Pipeline, Int4GroupedEpilogue>) {
    t.a_scale = pipeline.a_scale;
    t.bias = pipeline.bias;
  }
  return t;
}

// Packs rows [r0, r1) of A (signed) and their group sums into the buffers of `s`.
template <class AT, class OutT>
void int4_pack_rows(const GemmInt4Problem<AT, OutT>& p, Int4Scratch& s, const Int4TileArgs& t,
                    Index r0, Index r1) noexcept {
  constexpr std::uint8_t kFlip = std::is_same_v<AT, std::uint8_t> ? 0x80 : 0x00;
  // Integer groups read the bytes as unsigned a_u = a_p + 128 and need no row sums.
  const bool integer_groups = p.b->integer_groups();
  const auto flip = static_cast<std::uint8_t>(kFlip ^ (integer_groups ? 0x80 : 0x00));
  pack_int4_activations(row_slice(p, r0, r1),
                        reinterpret_cast<std::int8_t*>(s.a.get()) + r0 * t.lda, t.lda, flip,
                        integer_groups ? nullptr : s.rowsums.get() + r0 * t.rs_stride);
}

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int4_run(arch::Avx512Vnni, const GemmInt4Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  // Integer groups have AVX2 tiles only (this path's CPUs run them; the same integers).
  if (!std::is_same_v<Pipeline, Int4GroupedEpilogue> && p.b->integer_groups()) {
    gemm_int4_run(arch::Avx2{}, p, pipeline, policy);
    return;
  }
  Int4Scratch scratch;
  // Many rows on several threads: rows split, each thread packing its own (as the int8 path).
  const bool split_rows = policy.num_threads() > 1 && p.m >= kRowSplitMin;
  const Int4TileArgs base = int4_x86_setup(p, pipeline, scratch);
  Index mr = 0, nv = 0;
  int4_vnni_plan(p.m, std::is_same_v<Pipeline, Int4GroupedEpilogue>, mr, nv);
  if (split_rows) {
    policy.parallel_for(p.m, 4, [&](Index r0, Index r1) {
      int4_pack_rows(p, scratch, base, r0, r1);
      const GemmInt4Problem<AT, OutT> rows = row_slice(p, r0, r1);
      Int4TileArgs own = base;
      own.a = base.a + r0 * base.lda;
      own.rowsums = base.rowsums + r0 * base.rs_stride;
      gemm_int4_vnni_panels(rows, pipeline, own, mr, nv, 0, p.b->panels());
    });
    return;
  }
  int4_pack_rows(p, scratch, base, 0, p.m);
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int4_vnni_panels(p, pipeline, base, mr, nv, p0, p1);
  });
}

}  // namespace vitc::kernels::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // VITC_HAVE_X86_TARGET_KERNELS
