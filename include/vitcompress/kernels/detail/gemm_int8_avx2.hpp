// SPDX-License-Identifier: Apache-2.0
#pragma once
// int8 GEMM, AVX2 path. Every kernel is exact for the operands it is given; none lets vpmaddubsw
// saturate (its u8 × s8 pair sums clamp to int16: the classic bug). Which one runs depends on
// B's largest magnitude, recorded when B is packed:
//
// |b| <= 64 (weights of at most 7 bits), M >= 2: vpmaddubsw on u8 activations and B as packed.
// Each pair sum is at most 2·255·64 = 32640 < 2^15, so vpmaddubsw + vpmaddwd(1) is exact with no
// widening: no sign extension of B, no fold, 3 rows per tile. On Zen 3 it ran 1.33-1.35x the
// widening kernel at M = 197 (bench_gemm avx2_w7 against avx2). oneDNN 2.6 on AVX2 gives inexact
// u8 × s8 products for 8-bit weights (bench_gemm's `inexact` counter), as vpmaddubsw without
// widening would; its documentation asks for 7-bit weights on such CPUs.
//
// Otherwise, M >= 2: operands widened to int16 and multiplied with vpmaddwd. A is packed once per
// call as int16 a − a_zero_point (in [−255, 255]); B's 4-deep column groups are sign-extended as
// they are loaded (vpmovsxbw), once per two rows. vpmaddwd multiplies int16 pairs into int32 lanes:
// no saturation, no zero-point correction, −128 weights included. Accumulator lanes hold
// (column, k-pair) partial sums, folded by vphaddd at the end.
//
// M = 1: the sign trick with vpmaddubsw (below), for weights without −128.
// Anything else (M = 1 with −128 weights) takes the widening kernel.
//
// Why not the sign trick for 8-bit weights at M >= 2: vpmaddwd does as many multiply-adds per
// multiply instruction (16) as vpmaddubsw + vpmaddwd (32 per 2), and the sign trick also needs a
// vpsignb per product and a vpabsb per row. With two rows sharing each sign-extended weight
// vector the widening kernel measured as fast or faster on Zen 3 (the machine was noisy: see
// README, AVX2 section) and it needs no correction; with one row, sign-extending every weight
// byte costs more than vpsignb.

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/detail/output_stage_simd.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

namespace vitc::kernels::detail {

VITC_TARGET_AVX2 inline __m256i avx2_tail_mask(Index left) noexcept {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left < 0 ? 0 : left)), lanes);
}

// Stores v to dst, the first `left` lanes only.
VITC_TARGET_AVX2 inline void avx2_store_first(std::int32_t* dst, __m256i v, Index left) noexcept {
  if (left >= 8)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
  else if (left > 0)
    _mm256_maskstore_epi32(dst, avx2_tail_mask(left), v);
}

// MR rows × the first NQ groups of 4 columns of one 16-column panel; 4·NQ·MR accumulators
// (<= 8 of the 16 ymm registers). NQ < 4 serves a last panel of at most 4·NQ columns (Q·Kᵀ over
// 17 tokens ends in one column, P·V with a head dim of 24 in eight), at NQ/4 of the work.
// (Rewritten for MR = 3, GCC 12 spilled an accumulator to the stack in the k loop, a
// store-to-load round trip per step; this form compiles to a spill-free loop.)
template <int MR, int NQ>
VITC_TARGET_AVX2 void gemm_s16s8_tile_avx2(const std::int16_t* a, Index lda, const std::int8_t* b,
                                           Index kgroups, std::int32_t* dst, Index ldd,
                                           Index ncols) noexcept {
  __m256i acc[MR][NQ];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < NQ; ++q) acc[r][q] = _mm256_setzero_si256();
  for (Index g = 0; g < kgroups; ++g) {
    __m256i aw[MR];  // a[k..k+3] as int16, the 8 bytes repeated in every 64-bit lane
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      std::int64_t a8;
      std::memcpy(&a8, a + r * lda + g * 4, 8);
      aw[r] = _mm256_set1_epi64x(a8);
    }
#pragma GCC unroll 4
    for (int q = 0; q < NQ; ++q) {  // columns 4q..4q+3 of the panel, k 0..3, as int16
      const __m256i bw = _mm256_cvtepi8_epi16(
          _mm_load_si128(reinterpret_cast<const __m128i*>(b + g * 64 + q * 16)));
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r)
        acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(bw, aw[r]));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    // hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7]; the 64-bit permute (0, 2, 1, 3) restores order.
    // A missing odd group repeats the even one: its lanes land past 4·NQ columns, never stored.
    const __m256i* q = acc[r];
    std::int32_t* out = dst + r * ldd;
    const __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(q[0], q[NQ >= 2 ? 1 : 0]), 0xD8);
    avx2_store_first(out, lo, std::min<Index>(ncols, 4 * NQ));
    if constexpr (NQ >= 3) {
      const __m256i hi =
          _mm256_permute4x64_epi64(_mm256_hadd_epi32(q[2], q[NQ >= 4 ? 3 : 2]), 0xD8);
      avx2_store_first(out + 8, hi, std::min<Index>(ncols, 4 * NQ) - 8);
    }
  }
}

// Largest |b| for which vpmaddubsw's pairs of u8 × s8 products cannot saturate (2·255·64 < 2^15).
inline constexpr std::int32_t kMaddubsExactMagnitude = 64;

// MR rows × the first NH halves (8 columns each) of one 16-column panel, for weights with
// |b| <= kMaddubsExactMagnitude; A is uint8 (int8 activations shifted by +128), corrected by
// colcorr. Lanes are columns: no fold. NH = 1 serves a last panel of at most 8 columns.
template <int MR, int NH>
VITC_TARGET_AVX2 void gemm_u8s8_tile_avx2(const std::uint8_t* a, Index lda, const std::int8_t* b,
                                          Index kgroups, const std::int32_t* colcorr,
                                          std::int32_t* dst, Index ldd, Index ncols) noexcept {
  __m256i acc[MR][NH];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int h = 0; h < NH; ++h) acc[r][h] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (Index g = 0; g < kgroups; ++g) {
    __m256i bv[NH];
#pragma GCC unroll 2
    for (int h = 0; h < NH; ++h)
      bv[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 64 + h * 32));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      std::int32_t a4;
      std::memcpy(&a4, a + r * lda + g * 4, 4);
      const __m256i av = _mm256_set1_epi32(a4);
#pragma GCC unroll 2
      for (int h = 0; h < NH; ++h)
        acc[r][h] =
            _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(_mm256_maddubs_epi16(av, bv[h]), ones));
    }
  }
#pragma GCC unroll 2
  for (int h = 0; h < NH; ++h) {
    const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colcorr + 8 * h));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r)
      avx2_store_first(dst + r * ldd + 8 * h, _mm256_add_epi32(acc[r][h], corr), ncols - 8 * h);
  }
}

using Avx2SignFn = void (*)(const std::int8_t*, const std::int8_t*, Index, Index,
                            const std::int32_t*, std::int32_t*, Index);

// M = 1: the sign trick, NV panels, 2 ymm per panel. vpmaddubsw adds two u8 × s8 products into
// an int16 with saturation; with |a| <= 128 as the unsigned operand and sign(b, a) = ±b as the
// signed one, each pair is at most 2·128·127 = 32512 for weights in [−127, 127] (b = −128 would
// wrap in vpsignb: such weights take the kernel above). With one row each weight byte is used
// once, and sign-extending every one (the kernel above) cost more than vpsignb: on Zen 3 this ran
// 1.2-1.5x faster at M = 1 on most shapes (bench_gemm gemm/avx2/1x*, builds before and after).
template <int NV>
VITC_TARGET_AVX2 void gemm_s8s8_row_avx2(const std::int8_t* a, const std::int8_t* b,
                                         Index panel_bytes, Index kgroups,
                                         const std::int32_t* colcorr, std::int32_t* dst,
                                         Index ncols) noexcept {
  __m256i acc[2 * NV];
#pragma GCC unroll 8
  for (int h = 0; h < 2 * NV; ++h) acc[h] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (Index g = 0; g < kgroups; ++g) {
    std::int32_t a4;
    std::memcpy(&a4, a + g * 4, 4);
    const __m256i av = _mm256_set1_epi32(a4);
    const __m256i aabs = _mm256_abs_epi8(av);  // |−128| = 0x80 = 128 as unsigned
#pragma GCC unroll 8
    for (int h = 0; h < 2 * NV; ++h) {
      const __m256i bv = _mm256_load_si256(
          reinterpret_cast<const __m256i*>(b + (h / 2) * panel_bytes + g * 64 + (h % 2) * 32));
      const __m256i pairs = _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(bv, av));
      acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(pairs, ones));
    }
  }
#pragma GCC unroll 8
  for (int h = 0; h < 2 * NV; ++h) {
    const __m256i v = _mm256_add_epi32(
        acc[h], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colcorr + 8 * h)));
    avx2_store_first(dst + 8 * h, v, ncols - 8 * h);
  }
}

template <class AT, class OutT, class Pipeline>
VITC_TARGET_AVX2 void gemm_int8_avx2_row_panels(const GemmInt8Problem<AT, OutT>& p,
                                                const Pipeline& pipeline, const std::int8_t* a,
                                                const std::int32_t* colcorr, Index p0,
                                                Index p1) noexcept {
  constexpr bool kDirect = std::is_same_v<Pipeline, RawInt32> && std::is_same_v<OutT, std::int32_t>;
  constexpr Index kNv = 4;
  constexpr Avx2SignFn kFns[kNv] = {&gemm_s8s8_row_avx2<1>, &gemm_s8s8_row_avx2<2>,
                                    &gemm_s8s8_row_avx2<3>, &gemm_s8s8_row_avx2<4>};
  alignas(64) std::int32_t tile[kNv * 16];
  const PackedWeightsInt8& b = *p.b;
  const Index kg = b.kgroups(), pb = b.panel_bytes();
  for (Index q = p0; q < p1; q += kNv) {
    const Index nv = std::min(kNv, p1 - q);
    const Index n0 = q * 16, ncols = std::min(nv * 16, p.n - n0);
    std::int32_t* out = kDirect ? reinterpret_cast<std::int32_t*>(p.c) + n0 : tile;
    kFns[nv - 1](a, b.panel(q), pb, kg, colcorr + n0, out, ncols);
    if constexpr (!kDirect)
      apply_pipeline_tile_256(pipeline, tile, nv * 16, 1, n0, ncols, p.c + n0, p.c_row_stride);
  }
}

// M = 1 through the sign-trick kernel: A packed as int8 (uint8 as a − 128, XOR 0x80), corrected by
// −offset·colsum. Only for weights without −128 (the caller checks max_magnitude).
template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_avx2_row(const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                        Policy& policy) {
  constexpr bool kUnsigned = std::is_same_v<AT, std::uint8_t>;
  const Index lda = p.b->kgroups() * 4;
  auto abuf = scratch_in<std::uint8_t>(p.ws, 0, lda);
  pack_activations(p, abuf.get(), lda, kUnsigned ? 0x80 : 0x00);
  auto colcorr = column_corrections(*p.b, p.a_zero_point - (kUnsigned ? 128 : 0), p.ws);
  const auto* a = reinterpret_cast<const std::int8_t*>(abuf.get());
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int8_avx2_row_panels(p, pipeline, a, colcorr.get(), p0, p1);
  });
}

// A as int16 a − a_zero_point in rows of `ld` (a multiple of 4, >= K), zero past K.
template <class AT, class OutT>
void pack_activations_s16(const GemmInt8Problem<AT, OutT>& p, std::int16_t* dst,
                          Index ld) noexcept {
  const AT* a = p.a;
  const Index m = p.m, k = p.k, rs = p.a_row_stride, cs = p.a_col_stride;
  const std::int32_t zp = p.a_zero_point;
  for (Index i = 0; i < m; ++i) {
    std::int16_t* row = dst + i * ld;
    const AT* src = a + i * rs;
    if (cs == 1) {
      for (Index j = 0; j < k; ++j) row[j] = static_cast<std::int16_t>(src[j] - zp);
    } else {
      for (Index j = 0; j < k; ++j) row[j] = static_cast<std::int16_t>(src[j * cs] - zp);
    }
    std::fill(row + k, row + ld, std::int16_t{0});
  }
}

// Panels [p0, p1) one at a time; rows in blocks of kRowBlock, computed by
// block_rows(m0, rows, panel, out, ldo, ncols) into one buffer so that the output pipeline
// prepares its per-column constants once per block. kRowBlock is a multiple of the tile height,
// so that only the last block ends in a shorter, slower tile (with 3-row tiles in blocks of 8,
// 17 rows ran as 3+3+2, 3+3+2, 1).
template <Index kRowBlock, class AT, class OutT, class Pipeline, class BlockRows>
VITC_TARGET_AVX2 void gemm_int8_avx2_panels(const GemmInt8Problem<AT, OutT>& p,
                                            const Pipeline& pipeline, Index p0, Index p1,
                                            const BlockRows& block_rows) noexcept {
  constexpr bool kDirect = std::is_same_v<Pipeline, RawInt32> && std::is_same_v<OutT, std::int32_t>;
  alignas(64) std::int32_t tile[kRowBlock * 16];
  for (Index q = p0; q < p1; ++q) {
    const Index n0 = q * 16, ncols = std::min<Index>(16, p.n - n0);
    for (Index m0 = 0; m0 < p.m; m0 += kRowBlock) {
      const Index rows = std::min(kRowBlock, p.m - m0);
      std::int32_t* out =
          kDirect ? reinterpret_cast<std::int32_t*>(p.c) + m0 * p.c_row_stride + n0 : tile;
      block_rows(m0, rows, q, out, kDirect ? p.c_row_stride : 16, ncols);
      if constexpr (!kDirect)
        apply_pipeline_tile_256(pipeline, tile, 16, rows, n0, ncols, p.c + m0 * p.c_row_stride + n0,
                                p.c_row_stride);
    }
  }
}

// M >= 2, any weights: A widened to int16, 2-row tiles.
template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_avx2_widened(const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                            Policy& policy) {
  const Index lda = p.b->kgroups() * 4, kg = p.b->kgroups();
  auto abuf = scratch_in<std::int16_t>(p.ws, 0, p.m * lda);
  pack_activations_s16(p, abuf.get(), lda);
  const std::int16_t* a = abuf.get();
  const PackedWeightsInt8& b = *p.b;
  using TileFn =
      void (*)(const std::int16_t*, Index, const std::int8_t*, Index, std::int32_t*, Index, Index);
  // [rows − 1][column groups − 1]
  constexpr TileFn kTiles[2][4] = {{&gemm_s16s8_tile_avx2<1, 1>, &gemm_s16s8_tile_avx2<1, 2>,
                                    &gemm_s16s8_tile_avx2<1, 3>, &gemm_s16s8_tile_avx2<1, 4>},
                                   {&gemm_s16s8_tile_avx2<2, 1>, &gemm_s16s8_tile_avx2<2, 2>,
                                    &gemm_s16s8_tile_avx2<2, 3>, &gemm_s16s8_tile_avx2<2, 4>}};
  const auto block_rows = [&](Index m0, Index rows, Index q, std::int32_t* out, Index ldo,
                              Index ncols) {
    const Index groups = (ncols + 3) / 4;
    const TileFn two = kTiles[1][groups - 1], one = kTiles[0][groups - 1];
    for (Index r = 0; r < rows; r += 2)
      (rows - r >= 2 ? two : one)(a + (m0 + r) * lda, lda, b.panel(q), kg, out + r * ldo, ldo,
                                  ncols);
  };
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int8_avx2_panels<8>(p, pipeline, p0, p1, block_rows);
  });
}

// M >= 2, |b| <= kMaddubsExactMagnitude: A as uint8 (int8 shifted by +128), 3-row tiles (with 4,
// GCC 12 spilled an accumulator in the k loop).
template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_avx2_maddubs(const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                            Policy& policy) {
  constexpr bool kUnsigned = std::is_same_v<AT, std::uint8_t>;
  const Index lda = p.b->kgroups() * 4, kg = p.b->kgroups();
  auto abuf = scratch_in<std::uint8_t>(p.ws, 0, p.m * lda);
  pack_activations(p, abuf.get(), lda, kUnsigned ? 0x00 : 0x80);
  auto colcorr = column_corrections(*p.b, p.a_zero_point + (kUnsigned ? 0 : 128), p.ws);
  const std::uint8_t* a = abuf.get();
  const std::int32_t* cc = colcorr.get();
  const PackedWeightsInt8& b = *p.b;
  using TileFn = void (*)(const std::uint8_t*, Index, const std::int8_t*, Index,
                          const std::int32_t*, std::int32_t*, Index, Index);
  // [halves − 1][rows − 1]
  constexpr TileFn kTiles[2][3] = {
      {&gemm_u8s8_tile_avx2<1, 1>, &gemm_u8s8_tile_avx2<2, 1>, &gemm_u8s8_tile_avx2<3, 1>},
      {&gemm_u8s8_tile_avx2<1, 2>, &gemm_u8s8_tile_avx2<2, 2>, &gemm_u8s8_tile_avx2<3, 2>}};
  const auto block_rows = [&](Index m0, Index rows, Index q, std::int32_t* out, Index ldo,
                              Index ncols) {
    const TileFn* tiles = kTiles[ncols > 8 ? 1 : 0];
    for (Index r = 0; r < rows; r += 3)
      tiles[std::min<Index>(3, rows - r) - 1](a + (m0 + r) * lda, lda, b.panel(q), kg, cc + q * 16,
                                              out + r * ldo, ldo, ncols);
  };
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int8_avx2_panels<9>(p, pipeline, p0, p1, block_rows);
  });
}

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_run(arch::Avx2, const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  const std::int32_t magnitude = p.b->max_magnitude();
  if (p.m == 1 && magnitude <= 127)
    gemm_int8_avx2_row(p, pipeline, policy);
  else if (magnitude <= kMaddubsExactMagnitude)
    gemm_int8_avx2_maddubs(p, pipeline, policy);
  else
    gemm_int8_avx2_widened(p, pipeline, policy);
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
