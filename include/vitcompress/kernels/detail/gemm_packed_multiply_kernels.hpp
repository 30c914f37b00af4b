// SPDX-License-Identifier: Apache-2.0
#pragma once
// Packed-multiplier GEMM internals (kernels/gemm_packed_multiply.hpp): the weight layout, the
// scalar definition and the portable xsimd path. The arithmetic is documented in the public
// header; both paths below evaluate exactly the same wrapping 32-bit operations.

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/output_stage.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see gemm_int8_xsimd.hpp
#endif

namespace vitc::kernels {

// Activation policy: 4-bit activations (int8 storage, values in [−8, 7]) × 4-bit weights.
// |product| <= 64, so a 16-bit field holds the sum of up to 511 products.
struct PackedA4 {
  static constexpr std::string_view kName = "a4";
  static constexpr std::int32_t kMin = -8, kMax = 7;
  static constexpr Index kChunk = 511;  // 64·511 = 32704 <= 2^15 − 1; 56·511 <= 2^15
};

// Activation policy: 8-bit activations (any int8) × 4-bit weights. Products lie in
// [−1016, 1024], so a 16-bit field holds the sum of up to 31 products.
struct PackedA8 {
  static constexpr std::string_view kName = "a8";
  static constexpr std::int32_t kMin = -128, kMax = 127;
  static constexpr Index kChunk = 31;  // 1024·31 = 31744 <= 2^15 − 1; 1016·31 <= 2^15
};

namespace detail {

// The product of one activation a with one packed weight word W = w_lo + 2^16·w_hi, modulo 2^32,
// and the extraction of the two 16-bit fields of a chunk sum (both as int32).
[[nodiscard]] constexpr std::uint32_t packed_word(std::int32_t lo, std::int32_t hi) noexcept {
  return static_cast<std::uint32_t>(lo) + (static_cast<std::uint32_t>(hi) << 16);
}
[[nodiscard]] constexpr std::int32_t field_lo(std::uint32_t acc) noexcept {
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(acc & 0xFFFFu));
}
[[nodiscard]] constexpr std::int32_t field_hi(std::uint32_t acc) noexcept {
  const std::uint32_t rest = acc - static_cast<std::uint32_t>(field_lo(acc));
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(rest >> 16));
}

// A stored nibble holds u = w XOR 8 = w + 8 ∈ [0, 15]; its value is u − 8.
[[nodiscard]] constexpr std::int32_t nibble_value(std::uint32_t v) noexcept {
  return static_cast<std::int32_t>(v & 0xFu) - 8;
}

template <class OutT>
struct PackedMulProblem {
  const std::int32_t* a = nullptr;  // M rows of lda sign-extended activations, zero-padded
  Index lda = 0;                    // a multiple of 4, >= K
  Index m = 0, k = 0, n = 0;
  const std::uint32_t* b = nullptr;  // panels, each quads·16 words (see PackedWeightsMul)
  Index quads = 0;                   // ⌈K / 4⌉
  OutT* c = nullptr;
  Index c_row_stride = 0;
};

inline constexpr Index kPackedMulPanel = 32;  // columns per panel; lane t holds t and t + 16

// w[k][t] (hi = false) or w[k][t + 16] (hi = true) of a panel: word t of quad k / 4, nibble at
// bit 4·(k mod 4), plus 16 for hi.
[[nodiscard]] inline std::int32_t packed_nibble(const std::uint32_t* panel, Index k, Index t,
                                                bool hi) noexcept {
  return nibble_value(panel[(k / 4) * 16 + t] >> (4 * (k % 4) + (hi ? 16 : 0)));
}

// The definition: for each chunk [k0, k0 + kChunk), acc = Σ a_k·W_k (mod 2^32) with
// W_k = w[k][j] + 2^16·w[k][j + 16]; then C[i][j] += lo field, C[i][j + 16] += hi field.
template <class Act>
void packed_mul_tile_scalar(const std::int32_t* a, const std::uint32_t* panel, Index k,
                            std::int32_t* out /* 32 */) noexcept {
  std::fill(out, out + kPackedMulPanel, 0);
  for (Index k0 = 0; k0 < k; k0 += Act::kChunk) {
    const Index k1 = std::min(k, k0 + Act::kChunk);
    for (Index t = 0; t < 16; ++t) {
      std::uint32_t acc = 0;
      for (Index kk = k0; kk < k1; ++kk) {
        acc += static_cast<std::uint32_t>(a[kk]) *
               packed_word(packed_nibble(panel, kk, t, false), packed_nibble(panel, kk, t, true));
      }
      out[t] += field_lo(acc);
      out[t + 16] += field_hi(acc);
    }
  }
}

template <class Act, class OutT, class Pipeline, class Policy>
void packed_mul_run(arch::Scalar, const PackedMulProblem<OutT>& p, const Pipeline& pipeline,
                    Policy& policy) {
  const Index panels = (p.n + kPackedMulPanel - 1) / kPackedMulPanel;
  policy.parallel_for(panels, 1, [&](Index p0, Index p1) {
    alignas(64) std::int32_t tile[kPackedMulPanel];
    for (Index q = p0; q < p1; ++q) {
      const Index n0 = q * kPackedMulPanel, ncols = std::min(kPackedMulPanel, p.n - n0);
      for (Index i = 0; i < p.m; ++i) {
        packed_mul_tile_scalar<Act>(p.a + i * p.lda, p.b + q * p.quads * 16, p.k, tile);
        apply_pipeline_row(pipeline, tile, n0, ncols, p.c + i * p.c_row_stride + n0);
      }
    }
  });
}

// xsimd: int32 lanes, L = batch size (16 / 8 / 4 for AVX-512 / AVX2 / NEON); a panel's 16 words
// are 16 / L vectors, loaded once per quad of k. MR rows share every decoded weight vector. The
// chunks are whole quads, shorter than the definition's (any chunk <= K_c gives the same exact
// sums), so A rows must be zero-padded to a multiple of 4 (PackedMulProblem::lda).
template <class A, class Act, int MR>
void packed_mul_tile_xsimd(const std::int32_t* a, Index lda, const std::uint32_t* panel, Index k,
                           std::int32_t* tile /* MR × 32 */) noexcept {
  using B = xsimd::batch<std::int32_t, A>;
  constexpr int kL = static_cast<int>(B::size);
  constexpr int kV = 16 / kL;
  static_assert(kV >= 1 && 16 % kL == 0, "a panel's 16 words must be whole vectors");
  // Whole quads per chunk (28 or 508 steps <= K_c); A rows are zero-padded to whole quads.
  constexpr Index kQuadsPerChunk = Act::kChunk / 4;
  std::fill(tile, tile + MR * kPackedMulPanel, 0);
  const B nibbles(0x000F000F), bias(0x00080008);
  const Index quads = (k + 3) / 4;
  for (Index q0 = 0; q0 < quads; q0 += kQuadsPerChunk) {
    const Index q1 = std::min(quads, q0 + kQuadsPerChunk);
    B acc[MR][kV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < kV; ++v) acc[r][v] = B(0);
    for (Index q = q0; q < q1; ++q) {
      const auto* words = reinterpret_cast<const std::int32_t*>(panel + q * 16);
      B x[kV];
      for (int v = 0; v < kV; ++v) x[v] = B::load_aligned(words + v * kL);
      for (int s = 0; s < 4; ++s) {
        // Step k = 4q + s: (u_lo + 2^16·u_hi) − (8 + 2^16·8) = w_lo + 2^16·w_hi.
        B w[kV];
        for (int v = 0; v < kV; ++v) w[v] = ((x[v] >> (4 * s)) & nibbles) - bias;
        for (int r = 0; r < MR; ++r) {
          const B av(a[r * lda + 4 * q + s]);
          for (int v = 0; v < kV; ++v) acc[r][v] += av * w[v];
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < kV; ++v) {
        const B lo = (acc[r][v] << 16) >> 16;
        const B hi = (acc[r][v] - lo) >> 16;
        std::int32_t* lo_dst = tile + r * kPackedMulPanel + v * kL;
        (B::load_unaligned(lo_dst) + lo).store_unaligned(lo_dst);
        (B::load_unaligned(lo_dst + 16) + hi).store_unaligned(lo_dst + 16);
      }
  }
}

template <class A, class Act, class OutT, class Pipeline>
void packed_mul_xsimd_panels(const PackedMulProblem<OutT>& p, const Pipeline& pipeline, Index p0,
                             Index p1) noexcept {
  constexpr Index kMR = 4;
  alignas(64) std::int32_t tile[kMR * kPackedMulPanel];
  for (Index q = p0; q < p1; ++q) {
    const Index n0 = q * kPackedMulPanel, ncols = std::min(kPackedMulPanel, p.n - n0);
    const std::uint32_t* panel = p.b + q * p.quads * 16;
    for (Index m0 = 0; m0 < p.m; m0 += kMR) {
      const Index mr = std::min(kMR, p.m - m0);
      const std::int32_t* a = p.a + m0 * p.lda;
      switch (mr) {
        case 4:
          packed_mul_tile_xsimd<A, Act, 4>(a, p.lda, panel, p.k, tile);
          break;
        case 3:
          packed_mul_tile_xsimd<A, Act, 3>(a, p.lda, panel, p.k, tile);
          break;
        case 2:
          packed_mul_tile_xsimd<A, Act, 2>(a, p.lda, panel, p.k, tile);
          break;
        default:
          packed_mul_tile_xsimd<A, Act, 1>(a, p.lda, panel, p.k, tile);
          break;
      }
      for (Index r = 0; r < mr; ++r)
        apply_pipeline_row(pipeline, tile + r * kPackedMulPanel, n0, ncols,
                           p.c + (m0 + r) * p.c_row_stride + n0);
    }
  }
}

template <class Act, class A, class OutT, class Pipeline, class Policy>
void packed_mul_run(arch::Xsimd<A>, const PackedMulProblem<OutT>& p, const Pipeline& pipeline,
                    Policy& policy) {
  static_assert(A::supported(), "this xsimd arch is not enabled by the compile flags");
  const Index panels = (p.n + kPackedMulPanel - 1) / kPackedMulPanel;
  policy.parallel_for(
      panels, 1, [&](Index p0, Index p1) { packed_mul_xsimd_panels<A, Act>(p, pipeline, p0, p1); });
}

}  // namespace detail
}  // namespace vitc::kernels

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
