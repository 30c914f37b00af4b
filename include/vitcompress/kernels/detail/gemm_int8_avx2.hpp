// SPDX-License-Identifier: Apache-2.0
#pragma once
// int8 GEMM, AVX2 path: vpmaddubsw (u8 × s8 → pairs summed into int16) + vpmaddwd (int16 pairs →
// int32).
//
// The hazard: vpmaddubsw adds two products into an int16 with saturation. uint8 × int8 pairs
// reach 2·255·(−128) = −65280, so feeding it raw activations silently clamps (the classic bug).
// What we do instead, exactly for every input:
//   1. A is packed signed: int8 as is, uint8 as a − 128 (XOR 0x80; corrected below with the
//      column sums: Σ a·b = Σ (a − 128)·b + 128·colsum).
//   2. Sign trick: vpmaddubsw(|a|, sign(b, a)) with |a| <= 128 read as unsigned. For b in
//      [−127, 127], sign(b, a) = ±b is exact and each pair is at most 2·128·127 = 32512 < 32767:
//      no saturation.
//   3. b = −128 breaks step 2 (vpsignb(−128, a < 0) wraps to −128). Panels containing −128
//      (PackedWeightsInt8::panel_has_min) use a second kernel that sign-extends both operands to
//      int16 (vpmovsxbw) and multiplies with vpmaddwd only, which is exact for all int8 values.
// Symmetric int8 quantization produces [−127, 127], so the fast kernel is the common case.

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

// Stores acc + colcorr[0..8) (colcorr = −offset·colsum) to dst, the first `left` lanes only.
VITC_TARGET_AVX2 inline void avx2_store_corrected(std::int32_t* dst, __m256i acc,
                                                  const std::int32_t* colcorr,
                                                  Index left) noexcept {
  const __m256i v =
      _mm256_add_epi32(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colcorr)));
  if (left >= 8)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
  else if (left > 0)
    _mm256_maskstore_epi32(dst, avx2_tail_mask(left), v);
}

using Avx2TileFn = void (*)(const std::int8_t*, Index, const std::int8_t*, Index, Index,
                            const std::int32_t*, std::int32_t*, Index, Index);

// Sign-trick kernel (weights in [−127, 127]): MR rows × NV panels, 2 ymm per panel and row.
template <int MR, int NV>
VITC_TARGET_AVX2 void gemm_s8s8_tile_c4_avx2(const std::int8_t* a, Index lda, const std::int8_t* b,
                                             Index panel_bytes, Index kgroups,
                                             const std::int32_t* colcorr, std::int32_t* dst,
                                             Index ldd, Index ncols) noexcept {
  __m256i acc[MR][2 * NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int h = 0; h < 2 * NV; ++h) acc[r][h] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (Index g = 0; g < kgroups; ++g) {
    __m256i bv[2 * NV];
#pragma GCC unroll 8
    for (int h = 0; h < 2 * NV; ++h)
      bv[h] = _mm256_load_si256(
          reinterpret_cast<const __m256i*>(b + (h / 2) * panel_bytes + g * 64 + (h % 2) * 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      std::int32_t a4;
      std::memcpy(&a4, a + r * lda + g * 4, 4);
      const __m256i av = _mm256_set1_epi32(a4);
      const __m256i aabs = _mm256_abs_epi8(av);  // |−128| = 0x80 = 128 as unsigned
#pragma GCC unroll 8
      for (int h = 0; h < 2 * NV; ++h) {
        const __m256i pairs = _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(bv[h], av));
        acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int h = 0; h < 2 * NV; ++h)
      avx2_store_corrected(dst + r * ldd + 8 * h, acc[r][h], colcorr + 8 * h, ncols - 8 * h);
}

// Widening kernel (any int8 weights, −128 included): one panel, MR <= 2 rows; vpmovsxbw +
// vpmaddwd. Accumulator lanes hold (column, k-pair) partial sums, folded by vphaddd at the end.
template <int MR>
VITC_TARGET_AVX2 void gemm_s8s8_tile_c4_avx2_widen(const std::int8_t* a, Index lda,
                                                   const std::int8_t* b, Index kgroups,
                                                   const std::int32_t* colcorr, std::int32_t* dst,
                                                   Index ldd, Index ncols) noexcept {
  __m256i acc[MR][4];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) acc[r][q] = _mm256_setzero_si256();
  for (Index g = 0; g < kgroups; ++g) {
    __m256i bw[4];  // columns 4q..4q+3, k 0..3, as int16
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q)
      bw[q] = _mm256_cvtepi8_epi16(
          _mm_load_si128(reinterpret_cast<const __m128i*>(b + g * 64 + q * 16)));
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      std::int32_t a4;
      std::memcpy(&a4, a + r * lda + g * 4, 4);
      const __m256i aw = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(a4)));
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q)
        acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(bw[q], aw));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    // hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7]; the 64-bit permute (0, 2, 1, 3) restores order.
    const __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xD8);
    const __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2], acc[r][3]), 0xD8);
    avx2_store_corrected(dst + r * ldd, lo, colcorr, ncols);
    avx2_store_corrected(dst + r * ldd + 8, hi, colcorr + 8, ncols - 8);
  }
}

inline constexpr int kAvx2MaxTiles = 4;  // MR·NV panels: 8 ymm accumulators + operands in 16

template <int I>
constexpr Avx2TileFn avx2_tile_entry() {
  constexpr int mr = I / 4 + 1, nv = I % 4 + 1;
  if constexpr (mr * nv <= kAvx2MaxTiles)
    return &gemm_s8s8_tile_c4_avx2<mr, nv>;
  else
    return nullptr;
}
template <int... I>
constexpr std::array<Avx2TileFn, 16> avx2_tile_table(std::integer_sequence<int, I...>) {
  return {avx2_tile_entry<I>()...};
}
inline constexpr std::array<Avx2TileFn, 16> kAvx2Tiles =
    avx2_tile_table(std::make_integer_sequence<int, 16>{});

struct Avx2Plan {
  const std::int8_t* a;
  Index lda, mr, nv;
  const std::int32_t* colcorr;  // −offset·colsum, panels·16 entries
};

template <class AT, class OutT, class Pipeline>
VITC_TARGET_AVX2 void gemm_int8_avx2_panels(const GemmInt8Problem<AT, OutT>& p,
                                            const Pipeline& pipeline, const Avx2Plan& plan,
                                            Index p0, Index p1) noexcept {
  constexpr bool kDirect = std::is_same_v<Pipeline, RawInt32> && std::is_same_v<OutT, std::int32_t>;
  alignas(64) std::int32_t tile[kAvx2MaxTiles * 16];
  const PackedWeightsInt8& b = *p.b;
  const Index kg = b.kgroups(), pb = b.panel_bytes();
  for (Index q = p0; q < p1; q += plan.nv) {
    const Index nv = std::min(plan.nv, p1 - q);
    const Index n0 = q * 16, ncols = std::min(nv * 16, p.n - n0);
    bool widen = false;
    for (Index v = 0; v < nv; ++v) widen |= b.panel_has_min(q + v);
    for (Index m0 = 0; m0 < p.m; m0 += plan.mr) {
      const Index mr = std::min(plan.mr, p.m - m0);
      std::int32_t* out =
          kDirect ? reinterpret_cast<std::int32_t*>(p.c) + m0 * p.c_row_stride + n0 : tile;
      const Index ldo = kDirect ? p.c_row_stride : nv * 16;
      const std::int8_t* arow = plan.a + m0 * plan.lda;
      if (!widen) {
        const Avx2TileFn fn = kAvx2Tiles[static_cast<std::size_t>((mr - 1) * 4 + (nv - 1))];
        VITC_DCHECK(fn != nullptr);
        fn(arow, plan.lda, b.panel(q), pb, kg, plan.colcorr + n0, out, ldo, ncols);
      } else {
        for (Index v = 0; v < nv; ++v) {
          const Index left = ncols - 16 * v;
          for (Index r = 0; r < mr; r += 2) {
            const auto wfn =
                mr - r >= 2 ? &gemm_s8s8_tile_c4_avx2_widen<2> : &gemm_s8s8_tile_c4_avx2_widen<1>;
            wfn(arow + r * plan.lda, plan.lda, b.panel(q + v), kg, plan.colcorr + n0 + 16 * v,
                out + r * ldo + 16 * v, ldo, left);
          }
        }
      }
      if constexpr (!kDirect)
        apply_pipeline_tile_256(pipeline, tile, nv * 16, mr, n0, ncols,
                                p.c + m0 * p.c_row_stride + n0, p.c_row_stride);
    }
  }
}

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_run(arch::Avx2, const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  constexpr bool kUnsigned = std::is_same_v<AT, std::uint8_t>;
  const Index lda = p.b->kgroups() * 4;
  auto abuf = scratch_in<std::uint8_t>(p.ws, 0, p.m * lda);
  pack_activations(p, abuf.get(), lda, kUnsigned ? 0x80 : 0x00);
  // result = Σ a_packed·b − offset·colsum with a_packed = a − 128 for uint8 A.
  auto colcorr = column_corrections(*p.b, p.a_zero_point - (kUnsigned ? 128 : 0), p.ws);
  Avx2Plan plan{reinterpret_cast<const std::int8_t*>(abuf.get()), lda, 4, 1, colcorr.get()};
  if (p.m == 1) {
    plan.mr = 1;
    plan.nv = 4;
  }
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int8_avx2_panels(p, pipeline, plan, p0, p1);
  });
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
