// SPDX-License-Identifier: Apache-2.0
#pragma once
// 4-bit GEMM, AVX2 path: vpmaddubsw(u = w + 8 in [0, 15], signed a) + vpmaddwd. Each pair sum is
// at most 2·15·128 = 3840, and the two k-groups of a block are added in int16 (at most 7680)
// before one vpmaddwd: nothing saturates, so the sign trick of the int8 path is not needed.
// Integer groups swap the operands' roles (gemm_s8u4_tile_c8_int_grouped_avx2).

#include "vitcompress/kernels/detail/gemm_int4_avx512vnni.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

namespace vitc::kernels::detail {

template <int R, int H, int... J>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void avx2_4_row(std::integer_sequence<int, J...>, __m256i* acc,
                                                    const __m256i* lo, const __m256i* hi,
                                                    const std::int8_t* a, Index lda) noexcept {
  std::int32_t a_lo, a_hi;
  std::memcpy(&a_lo, a + R * lda, 4);
  std::memcpy(&a_hi, a + R * lda + 4, 4);
  const __m256i vl = _mm256_set1_epi32(a_lo), vh = _mm256_set1_epi32(a_hi);
  const __m256i ones = _mm256_set1_epi16(1);
  ((acc[R * H + J] = _mm256_add_epi32(
        acc[R * H + J], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo[J], vl),
                                                           _mm256_maddubs_epi16(hi[J], vh)),
                                          ones))),
   ...);
}

// acc[r][h] (h = half-panel: 8 columns) += Σ over block bk.
template <int H, int... R, int... J>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void avx2_4_block(std::integer_sequence<int, R...>,
                                                      std::integer_sequence<int, J...> js,
                                                      __m256i* acc, const std::int8_t* a, Index lda,
                                                      const std::uint8_t* b, Index panel_bytes,
                                                      Index bk) noexcept {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i x[H] = {_mm256_load_si256(
      reinterpret_cast<const __m256i*>(b + (J / 2) * panel_bytes + bk * 64 + (J % 2) * 32))...};
  const __m256i lo[H] = {_mm256_and_si256(x[J], mask)...};
  const __m256i hi[H] = {_mm256_and_si256(_mm256_srli_epi16(x[J], 4), mask)...};
  (avx2_4_row<R, H>(js, acc, lo, hi, a + bk * 8, lda), ...);
}

template <int MR, int H>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void avx2_4_init(__m256i* acc, const std::int32_t* colcorr,
                                                     const std::int32_t* rowsums,
                                                     Index rs_stride) noexcept {
#pragma GCC unroll 32
  for (int i = 0; i < MR * H; ++i)
    acc[i] = _mm256_sub_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colcorr + 8 * (i % H))),
        _mm256_set1_epi32(8 * rowsums[(i / H) * rs_stride]));
}

template <int MR, int NV>
VITC_TARGET_AVX2 void gemm_s8u4_tile_c8_avx2(const Int4TileArgs& t) noexcept {
  constexpr int H = 2 * NV;
  __m256i acc[MR * H];
  avx2_4_init<MR, H>(acc, t.colcorr, t.rowsums, t.rs_stride);
  for (Index bk = 0; bk < t.kblocks; ++bk)
    avx2_4_block<H>(std::make_integer_sequence<int, MR>{}, std::make_integer_sequence<int, H>{},
                    acc, t.a, t.lda, t.b, t.panel_bytes, bk);
  auto* dst = static_cast<std::int32_t*>(t.dst);
#pragma GCC unroll 32
  for (int i = 0; i < MR * H; ++i)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (i / H) * t.ldd + 8 * (i % H)), acc[i]);
}

// acc = P_g, the exact partial sums of group g.
template <int MR, int H>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void avx2_4_group(__m256i* acc, const Int4TileArgs& t,
                                                      Index g) noexcept {
  avx2_4_init<MR, H>(acc, t.colcorr + g * t.group_stride, t.rowsums + g, t.rs_stride);
  const Index b0 = g * t.group_blocks, b1 = std::min(t.kblocks, b0 + t.group_blocks);
  for (Index bk = b0; bk < b1; ++bk)
    avx2_4_block<H>(std::make_integer_sequence<int, MR>{}, std::make_integer_sequence<int, H>{},
                    acc, t.a, t.lda, t.b, t.panel_bytes, bk);
}

template <int MR, int NV>
VITC_TARGET_AVX2 void gemm_s8u4_tile_c8_grouped_avx2(const Int4TileArgs& t) noexcept {
  constexpr int H = 2 * NV;
  __m256 facc[MR * H];
#pragma GCC unroll 32
  for (int i = 0; i < MR * H; ++i) facc[i] = _mm256_setzero_ps();
  for (Index g = 0; g < t.groups; ++g) {
    __m256i acc[MR * H];
    avx2_4_group<MR, H>(acc, t, g);
    const float* sc = t.scales + g * t.group_stride;
#pragma GCC unroll 32
    for (int i = 0; i < MR * H; ++i)
      facc[i] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), _mm256_loadu_ps(sc + 8 * (i % H)), facc[i]);
  }
  const __m256 as = _mm256_set1_ps(t.a_scale);
  auto* dst = static_cast<float*>(t.dst);
#pragma GCC unroll 32
  for (int i = 0; i < MR * H; ++i) {
    const __m256 bias = t.bias ? _mm256_loadu_ps(t.bias + 8 * (i % H)) : _mm256_setzero_ps();
    _mm256_storeu_ps(dst + (i / H) * t.ldd + 8 * (i % H), _mm256_fmadd_ps(facc[i], as, bias));
  }
}

// Integer groups: int32 dst[r][0 .. 8·H) = Σ_g m_g·P_g (exact; see PackedWeightsInt4). Here the
// activations are the unsigned operand, packed as a_u = a_p + 128 (int4_pack_rows), and the
// nibbles become signed weights u − 8, so the multiplier m_g rides in the vpmaddwd that widens to
// int32 (m in both int16 halves of a column's lane) and the only correction is per column,
// folded by int4_x86_setup into colcorr. Pair sums are at most 2·255·8 = 4080, two k-groups
// 8160, and 8160·255·2 < 2^31 per step: nothing saturates.
template <int MR, int H, int... J>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void avx2_4m_row(int r, std::integer_sequence<int, J...>,
                                                     __m256i* acc, const __m256i* lo,
                                                     const __m256i* hi, const __m256i* mp,
                                                     const std::int8_t* a) noexcept {
  std::int32_t a_lo, a_hi;
  std::memcpy(&a_lo, a, 4);
  std::memcpy(&a_hi, a + 4, 4);
  const __m256i vl = _mm256_set1_epi32(a_lo), vh = _mm256_set1_epi32(a_hi);
  ((acc[r * H + J] = _mm256_add_epi32(
        acc[r * H + J], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(vl, lo[J]),
                                                           _mm256_maddubs_epi16(vh, hi[J])),
                                          mp[J]))),
   ...);
}

template <int MR, int NV>
VITC_TARGET_AVX2 void gemm_s8u4_tile_c8_int_grouped_avx2(const Int4TileArgs& t) noexcept {
  constexpr int H = 2 * NV;
  __m256i acc[MR * H];
#pragma GCC unroll 32
  for (int i = 0; i < MR * H; ++i)
    acc[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.colcorr + 8 * (i % H)));
  const __m256i mask = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (Index g = 0; g < t.groups; ++g) {
    __m256i mp[H];
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h)
      mp[h] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(t.mults + g * t.group_stride + 8 * h));
    const Index b0 = g * t.group_blocks, b1 = std::min(t.kblocks, b0 + t.group_blocks);
    for (Index bk = b0; bk < b1; ++bk) {
      __m256i lo[H], hi[H];
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h) {
        const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(
            t.b + (h / 2) * t.panel_bytes + bk * 64 + (h % 2) * 32));
        lo[h] = _mm256_sub_epi8(_mm256_and_si256(x, mask), eight);
        hi[h] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(x, 4), mask), eight);
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        avx2_4m_row<MR, H>(r, std::make_integer_sequence<int, H>{}, acc, lo, hi, mp,
                           t.a + r * t.lda + bk * 8);
    }
  }
  auto* dst = static_cast<std::int32_t*>(t.dst);
#pragma GCC unroll 32
  for (int i = 0; i < MR * H; ++i)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (i / H) * t.ldd + 8 * (i % H)), acc[i]);
}

// Tile kinds: per channel, float groups (Int4GroupedEpilogue), integer groups.
enum class Int4TileKind { kChannel, kFloatGroups, kIntGroups };

template <Int4TileKind kKind, int I>
constexpr Int4TileFn avx2_4_tile_entry() {
  constexpr int mr = I / 4 + 1, nv = I % 4 + 1;
  if constexpr (kKind == Int4TileKind::kChannel && mr * nv <= 4)
    return &gemm_s8u4_tile_c8_avx2<mr, nv>;
  else if constexpr (kKind == Int4TileKind::kFloatGroups && mr * nv <= 2)
    return &gemm_s8u4_tile_c8_grouped_avx2<mr, nv>;
  else if constexpr (kKind == Int4TileKind::kIntGroups && mr * nv <= 4)
    return &gemm_s8u4_tile_c8_int_grouped_avx2<mr, nv>;
  else
    return nullptr;
}
template <Int4TileKind kKind, int... I>
constexpr std::array<Int4TileFn, 16> avx2_4_tile_table(std::integer_sequence<int, I...>) {
  return {avx2_4_tile_entry<kKind, I>()...};
}
inline constexpr std::array<Int4TileFn, 16> kAvx2Int4Tiles =
    avx2_4_tile_table<Int4TileKind::kChannel>(std::make_integer_sequence<int, 16>{});
inline constexpr std::array<Int4TileFn, 16> kAvx2Int4GroupedTiles =
    avx2_4_tile_table<Int4TileKind::kFloatGroups>(std::make_integer_sequence<int, 16>{});
inline constexpr std::array<Int4TileFn, 16> kAvx2Int4IntGroupedTiles =
    avx2_4_tile_table<Int4TileKind::kIntGroups>(std::make_integer_sequence<int, 16>{});

template <class AT, class OutT, class Pipeline>
VITC_TARGET_AVX2 void gemm_int4_avx2_panels(const GemmInt4Problem<AT, OutT>& p,
                                            const Pipeline& pipeline, const Int4TileArgs& base,
                                            Index mr, Index nv, Index p0, Index p1) noexcept {
  constexpr bool kGrouped = std::is_same_v<Pipeline, Int4GroupedEpilogue>;
  const auto& tiles = kGrouped                ? kAvx2Int4GroupedTiles
                      : p.b->integer_groups() ? kAvx2Int4IntGroupedTiles
                                              : kAvx2Int4Tiles;
  int4_drive_panels<256>(tiles, 4, p, pipeline, base, mr, nv, p0, p1);
}

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int4_run(arch::Avx2, const GemmInt4Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  Int4Scratch scratch;
  const Int4TileArgs base = int4_x86_setup(p, pipeline, scratch);
  int4_pack_rows(p, scratch, base, 0, p.m);
  const bool grouped = std::is_same_v<Pipeline, Int4GroupedEpilogue>;
  Index mr = grouped ? 2 : 4, nv = 1;
  if (p.m == 1) {
    mr = 1;
    nv = grouped || p.b->integer_groups() ? 2 : 4;  // integer groups: 4 spill their registers
  } else if (p.m < mr) {
    mr = p.m;
  }
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int4_avx2_panels(p, pipeline, base, mr, nv, p0, p1);
  });
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
