// SPDX-License-Identifier: Apache-2.0
#pragma once
// int8 GEMM, AVX-512 VNNI path: vpdpbusd (u8 × s8, 4 products summed into each int32 lane).
//
// vpdpbusd needs unsigned activations. uint8 A is used as is. int8 A is packed as a + 128 (XOR
// 0x80), so the kernel computes Σ (a + 128)·b = Σ a·b + 128·colsum(B) and subtracts
// (128 + a_zero_point)·colsum(B) afterwards; with uint8 A it subtracts a_zero_point·colsum(B).
// No intermediate saturates: each 16-bit product is at most 255·128, lanes wrap modulo 2^32,
// and the corrected result is the exact int32 (K <= 65536).
//
// Microkernel gemm_x8s8_<MR>x<16·NV>c4_vnni: MR rows × NV panels of 16 columns, MR·NV <= 24 zmm
// accumulators; per k-group NV aligned loads of B, MR broadcasts of 4 bytes of A.

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/detail/output_stage_simd.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

#include <array>
#include <utility>

namespace vitc::kernels::detail {

using VnniTileFn = void (*)(const std::uint8_t*, Index, const std::int8_t*, Index, Index,
                            const std::int32_t*, std::int32_t*, Index);

// One k-group of one row: acc[R][v] += dpbusd(a[R][4g..4g+3] broadcast, b[v]). The tile is
// written with index_sequence folds, not loops over acc[MR][NV]: GCC keeps an array of vectors
// indexed in a loop on the stack, and constant indices let it live in registers.
template <int R, int NV, int... V>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void vnni_row(std::integer_sequence<int, V...>,
                                                        __m512i* acc, const __m512i* bv,
                                                        const std::uint8_t* a, Index lda,
                                                        Index g) noexcept {
  std::int32_t a4;
  std::memcpy(&a4, a + R * lda + g * 4, 4);
  const __m512i av = _mm512_set1_epi32(a4);
  ((acc[R * NV + V] = _mm512_dpbusd_epi32(acc[R * NV + V], av, bv[V])), ...);
}

template <int NV, int... R, int... V>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void vnni_kgroup(std::integer_sequence<int, R...>,
                                                           std::integer_sequence<int, V...> vs,
                                                           __m512i* acc, const std::uint8_t* a,
                                                           Index lda, const std::int8_t* b,
                                                           Index panel_bytes, Index g) noexcept {
  const __m512i bv[NV] = {_mm512_load_si512(b + V * panel_bytes + g * 64)...};
  (vnni_row<R, NV>(vs, acc, bv, a, lda, g), ...);
}

// dst[r][0 .. 16·NV) = Σ_g dpbusd(a[r][4g..4g+3], panel[v][g]) + colcorr, where the caller
// precomputes colcorr = −offset·colsum once per call. The accumulators start at colcorr and end in
// full-width stores: with a masked or corrected store after the loop, GCC 12's PRE keeps a second
// copy of every accumulator and spills them.
template <int MR, int NV>
VITC_TARGET_AVX512VNNI void gemm_x8s8_tile_c4_vnni(const std::uint8_t* a, Index lda,
                                                   const std::int8_t* b, Index panel_bytes,
                                                   Index kgroups, const std::int32_t* colcorr,
                                                   std::int32_t* dst, Index ldd) noexcept {
  __m512i acc[MR * NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i) acc[i] = _mm512_loadu_si512(colcorr + 16 * (i % NV));
  for (Index g = 0; g < kgroups; ++g)
    vnni_kgroup<NV>(std::make_integer_sequence<int, MR>{}, std::make_integer_sequence<int, NV>{},
                    acc, a, lda, b, panel_bytes, g);
#pragma GCC unroll 32
  for (int i = 0; i < MR * NV; ++i)
    _mm512_storeu_si512(dst + (i / NV) * ldd + 16 * (i % NV), acc[i]);
}

inline constexpr int kVnniMaxTiles = 24;  // accumulators: 24 of the 32 zmm registers

template <int I>
constexpr VnniTileFn vnni_tile_entry() {
  constexpr int mr = I / 8 + 1, nv = I % 8 + 1;
  if constexpr (mr * nv <= kVnniMaxTiles)
    return &gemm_x8s8_tile_c4_vnni<mr, nv>;
  else
    return nullptr;
}
template <int... I>
constexpr std::array<VnniTileFn, 64> vnni_tile_table(std::integer_sequence<int, I...>) {
  return {vnni_tile_entry<I>()...};
}
// kVnniTiles[(mr − 1)·8 + (nv − 1)], mr, nv in 1..8, null where mr·nv > 24.
inline constexpr std::array<VnniTileFn, 64> kVnniTiles =
    vnni_tile_table(std::make_integer_sequence<int, 64>{});

struct VnniPlan {
  const std::uint8_t* a;
  Index lda, mr, nv;
  const std::int32_t* colcorr;  // −offset·colsum, panels·16 entries
};

// Panels [p0, p1) of C: blocks of plan.nv panels, each swept by row blocks of plan.mr.
template <class AT, class OutT, class Pipeline>
VITC_TARGET_AVX512VNNI void gemm_int8_vnni_panels(const GemmInt8Problem<AT, OutT>& p,
                                                  const Pipeline& pipeline, const VnniPlan& plan,
                                                  Index p0, Index p1) noexcept {
  constexpr bool kDirect = std::is_same_v<Pipeline, RawInt32> && std::is_same_v<OutT, std::int32_t>;
  alignas(64) std::int32_t tile[kVnniMaxTiles * 16];
  const PackedWeightsInt8& b = *p.b;
  const Index kg = b.kgroups(), pb = b.panel_bytes();
  for (Index q = p0; q < p1; q += plan.nv) {
    const Index nv = std::min(plan.nv, p1 - q);
    const Index n0 = q * 16, ncols = std::min(nv * 16, p.n - n0);
    // Row tiles of balanced height (197 rows: 22 of 8 and 3 of 7, not 24 of 8 and one of 5).
    const Index tiles = (p.m + plan.mr - 1) / plan.mr;
    const Index base = tiles > 0 ? p.m / tiles : 0, taller = tiles > 0 ? p.m % tiles : 0;
    for (Index t = 0, m0 = 0; t < tiles; ++t) {
      const Index mr = base + (t < taller ? 1 : 0);
      const VnniTileFn fn = kVnniTiles[static_cast<std::size_t>((mr - 1) * 8 + (nv - 1))];
      VITC_DCHECK(fn != nullptr);
      const bool direct = kDirect && ncols == nv * 16;
      std::int32_t* out =
          direct ? reinterpret_cast<std::int32_t*>(p.c) + m0 * p.c_row_stride + n0 : tile;
      const Index ldo = direct ? p.c_row_stride : nv * 16;
      fn(plan.a + m0 * plan.lda, plan.lda, b.panel(q), pb, kg, plan.colcorr + n0, out, ldo);
      if (!direct)
        apply_pipeline_tile_512(pipeline, tile, nv * 16, mr, n0, ncols,
                                p.c + m0 * p.c_row_stride + n0, p.c_row_stride);
      m0 += mr;
    }
  }
}

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_run(arch::Avx512Vnni, const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  constexpr bool kSigned = std::is_same_v<AT, std::int8_t>;
  constexpr std::uint8_t kFlip = kSigned ? 0x80 : 0x00;
  const Index lda = p.b->kgroups() * 4;
  auto abuf = scratch_in<std::uint8_t>(p.ws, 0, p.m * lda);
  auto colcorr = column_corrections(*p.b, (kSigned ? 128 : 0) + p.a_zero_point, p.ws);
  VnniPlan plan{abuf.get(), lda, 8, 3, colcorr.get()};
  // Avoid a last block of one panel when two blocks of two fit (N = 64: 2 + 2, not 3 + 1).
  if (p.b->panels() % 3 == 1 && p.b->panels() % 2 == 0) plan.nv = 2;
  if (p.m < 4) {
    plan.mr = std::max<Index>(p.m, 1);
    plan.nv = 8;
  }
  if (policy.num_threads() > 1 && p.m >= kRowSplitMin) {
    // Many rows: each thread packs its own rows of A and sweeps every panel with them. Splitting
    // columns instead leaves A's packing serial and every thread reading all of A; measured on
    // DeiT-base shapes, 2 threads gain 1.76–1.92× this way against 1.52–1.85× by columns.
    policy.parallel_for(p.m, 4, [&](Index r0, Index r1) {
      const GemmInt8Problem<AT, OutT> rows = row_slice(p, r0, r1);
      VnniPlan own = plan;
      std::uint8_t* packed = abuf.get() + r0 * lda;
      own.a = packed;
      pack_activations(rows, packed, lda, kFlip);
      gemm_int8_vnni_panels(rows, pipeline, own, 0, p.b->panels());
    });
    return;
  }
  // Few rows (M = 1 or 8: reading B dominates): columns split across threads.
  pack_activations(p, abuf.get(), lda, kFlip);
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    gemm_int8_vnni_panels(p, pipeline, plan, p0, p1);
  });
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
