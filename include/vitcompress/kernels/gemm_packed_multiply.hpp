// SPDX-License-Identifier: Apache-2.0
#pragma once
// PackQViT's packed multiplier: two low-bit products from one 32-bit multiply, with guard bits.
//
// Why: a CPU without a low-bit dot-product instruction (Arm cores without SDOT, scalar cores)
// spends one multiply per int8/int4 product. Packing two signed 4-bit weights of one row k into
// one 32-bit word, W = w[k][j] + 2^16·w[k][j + 16], gives
//     a·W = a·w[k][j] + 2^16·a·w[k][j + 16]
// so one 32-bit multiply-accumulate computes two products. The low field of the running sum
// is read back exactly while it stays in [−2^15, 2^15): its 16 bits are the guard band. The sum
// over a chunk of K_c steps is
//     acc = P_lo + 2^16·P_hi  (mod 2^32),  P_lo = Σ a_k·w[k][j],  P_hi = Σ a_k·w[k][j + 16]
// and the fields come back as P_lo = sext16(acc), P_hi = sext16((acc − P_lo) >> 16), both exact
// when |P_lo|, |P_hi| fit in int16. Every chunk is extracted into int32 accumulators before the
// next one starts, so any K is exact (and any chunking with chunks <= K_c gives the same sums:
// the scalar definition uses chunks of K_c, the xsimd path whole quads of k, 28 or 508 steps).
//
//   policy     activations          product range     K_c (max steps per chunk)
//   PackedA4   int8 holding [−8, 7]  [−56, 64]         511  (64·511 = 32704 < 2^15)
//   PackedA8   any int8              [−1016, 1024]     31   (1024·31 = 31744 < 2^15)
//
// (K_c is the largest K with max|P| <= 2^15 − 1 on the positive side and >= −2^15 on the
// negative side; the positive side binds.) Results are exact: C[i][j] = pipeline(Σ_k a·w, j),
// identical to gemm_int8 with the same int8 operands.
//
// Weights: PackedWeightsMul, built once from a K×N int8 tensor with values in [−8, 7] (signed
// 4-bit). Panels of 32 columns; in a panel, word t (t = 0..15) of quad q holds the 4-bit codes
// u = w XOR 8 (= w + 8) of rows k = 4q + s (s = 0..3): u(w[k][t]) at bit 4s and u(w[k][t + 16])
// at bit 16 + 4s. Half a byte per weight, like PackedWeightsInt4, but laid out for 32-bit lanes:
// a lane decodes step s in three operations, W = ((word >> 4s) & 0x000F000F) − 0x00080008.
//
// Operands: A int8 (zero point 0: symmetric activations, as PackQViT's LSQ quantizer), any
// strides; C column stride 1. Output through any output pipeline of kernels/output_stage.hpp.
//
// Paths: arch::Scalar (the definition: the same wrapping 32-bit arithmetic, one product pair per
// multiply) and arch::Xsimd<A> (any xsimd arch, NEON included; 2·L products per vector
// multiply). There is no separate AVX2/VNNI path: on x86 the int8 dot-product instructions
// (vpmaddubsw, vpdpbusd) compute 2–4 products per 16/32-bit lane, and the AVX2 / VNNI kernels of
// gemm_int4_packed.hpp are as fast or faster (README, bench_gemm packed_mul_*; the xsimd path
// here beats that header's xsimd path at M = 197 and loses at M = 1). arch::Auto runs the xsimd
// path when the CPU has it (VITC_ARCH=scalar forces the scalar path); forcing Avx2 or
// Avx512Vnni throws ArgumentError.
//
// Errors: ShapeError for mismatched shapes; ArgumentError for weights or (PackedA4)
// activations outside their range, a C column stride other than 1, or an unavailable path.

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/detail/gemm_packed_multiply_kernels.hpp"
#include "vitcompress/kernels/output_stage.hpp"

namespace vitc::kernels {

// Signed 4-bit weights in the packed-multiplier layout (see the header comment).
class PackedWeightsMul {
 public:
  static constexpr Index kPanel = detail::kPackedMulPanel;

  PackedWeightsMul() = default;

  // From K×N weights with every value in [−8, 7]; throws ArgumentError naming the first one
  // outside.
  explicit PackedWeightsMul(TensorView<const std::int8_t, 2> w)
      : k_(w.extent(0)),
        n_(w.extent(1)),
        quads_((w.extent(0) + 3) / 4),
        words_(Shape<1>{std::max<Index>(panels_of(w.extent(1)) * quads_ * 16, 1)}) {
    for (Index k = 0; k < k_; ++k)
      for (Index j = 0; j < n_; ++j) {
        const std::int32_t v = w(k, j);
        if (v < -8 || v > 7)
          VITC_THROW(ArgumentError("PackedWeightsMul: weight [" + std::to_string(k) + ", " +
                                   std::to_string(j) + "] = " + std::to_string(v) +
                                   " is outside the signed 4-bit range [-8, 7]"));
        const Index panel = j / kPanel, col = j % kPanel;
        const Index t = col % 16, shift = 4 * (k % 4) + (col >= 16 ? 16 : 0);
        words_(panel * quads_ * 16 + (k / 4) * 16 + t) |=
            ((static_cast<std::uint32_t>(v) & 0xFu) ^ 8u) << shift;
      }
  }

  [[nodiscard]] Index depth() const noexcept { return k_; }
  [[nodiscard]] Index cols() const noexcept { return n_; }
  [[nodiscard]] Index quads() const noexcept { return quads_; }
  [[nodiscard]] Index panels() const noexcept { return panels_of(n_); }
  [[nodiscard]] const std::uint32_t* data() const noexcept { return words_.data(); }
  // Bytes of packed weights (half a byte per padded weight).
  [[nodiscard]] Index bytes() const noexcept { return panels() * quads_ * 64; }
  // The stored weight w[k][j] (decoded from its nibble).
  [[nodiscard]] std::int32_t at(Index k, Index j) const noexcept {
    return detail::packed_nibble(words_.data() + (j / kPanel) * quads_ * 16, k, (j % kPanel) % 16,
                                 (j % kPanel) >= 16);
  }

 private:
  static constexpr Index panels_of(Index n) noexcept { return (n + kPanel - 1) / kPanel; }
  Index k_ = 0, n_ = 0, quads_ = 0;
  Tensor<std::uint32_t, 1> words_{Shape<1>{1}};
};

namespace detail {
template <class Arch>
[[nodiscard]] bool packed_mul_arch_available() noexcept {
  if constexpr (std::is_same_v<Arch, arch::Auto>)
    return true;
  else if constexpr (std::is_same_v<Arch, arch::Scalar> || arch::kIsXsimd<Arch>)
    return Arch::available();
  else
    return false;  // no x86-specific path (see the header comment)
}
}  // namespace detail

// C = pipeline(A·W) with the packed multiplier; Act = PackedA4 or PackedA8.
template <class Act, class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          OutputPipeline Pipeline, class OutT, class Policy = Sequential>
void gemm_packed_multiply(TensorView<AT, 2> a, const PackedWeightsMul& w, const Pipeline& pipeline,
                          TensorView<OutT, 2> c, Policy&& policy = Policy{}) {
  static_assert(std::is_same_v<Act, PackedA4> || std::is_same_v<Act, PackedA8>,
                "gemm_packed_multiply: Act must be PackedA4 or PackedA8");
  static_assert(std::is_same_v<std::remove_const_t<AT>, std::int8_t>,
                "gemm_packed_multiply: A must hold int8_t");
  static_assert(std::is_same_v<pipeline_output_t<Pipeline>, OutT>,
                "gemm_packed_multiply: C's element type must be the output pipeline's result type");
  const Index m = a.extent(0), k = a.extent(1), n = w.cols();
  if (k != w.depth())
    VITC_THROW(ShapeError("gemm_packed_multiply: A has " + std::to_string(k) +
                          " columns but the weights have depth " + std::to_string(w.depth())));
  if (c.extent(0) != m || c.extent(1) != n)
    VITC_THROW(ShapeError("gemm_packed_multiply: C is " + vitc::detail::shape_string(c.shape()) +
                          ", expected [" + std::to_string(m) + ", " + std::to_string(n) + "]"));
  if (n > 1 && m > 0 && c.stride(1) != 1)
    VITC_THROW(ArgumentError("gemm_packed_multiply: C must have column stride 1"));
  if (!detail::packed_mul_arch_available<Arch>())
    VITC_THROW(ArgumentError("gemm_packed_multiply: the forced path '" + std::string(Arch::kName) +
                             "' is not available (scalar or xsimd)"));
  validate_pipeline(pipeline, n);
  if (m == 0 || n == 0) return;

  // Activations sign-extended to int32 rows (broadcast operands of the 32-bit multiplies).
  const Index lda = std::max<Index>((k + 3) / 4 * 4, 4);  // whole quads of k, zero-padded
  auto a32 = detail::scratch<std::int32_t>(m * lda);
  std::fill(a32.get(), a32.get() + m * lda, 0);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < k; ++j) {
      const std::int32_t v = a(i, j);
      if constexpr (std::is_same_v<Act, PackedA4>)
        if (v < Act::kMin || v > Act::kMax)
          VITC_THROW(ArgumentError("gemm_packed_multiply: activation [" + std::to_string(i) + ", " +
                                   std::to_string(j) + "] = " + std::to_string(v) +
                                   " is outside the PackedA4 range [-8, 7]"));
      a32[static_cast<std::size_t>(i * lda + j)] = v;
    }
  detail::PackedMulProblem<OutT> p;
  p.a = a32.get();
  p.lda = lda;
  p.m = m;
  p.k = k;
  p.n = n;
  p.b = w.data();
  p.quads = w.quads();
  p.c = c.data();
  p.c_row_stride = c.stride(0);
  auto& pol = policy;
  if constexpr (std::is_same_v<Arch, arch::Auto>) {
    if (arch::best_arch<Native>() != arch::ArchId::kScalar && Native::available()) {
      if constexpr (Native::xsimd_arch::supported()) {
        detail::packed_mul_run<Act>(Native{}, p, pipeline, pol);
        return;
      }
    }
    detail::packed_mul_run<Act>(arch::Scalar{}, p, pipeline, pol);
  } else if constexpr (std::is_same_v<Arch, arch::Scalar> || arch::kIsXsimd<Arch>) {
    detail::packed_mul_run<Act>(Arch{}, p, pipeline, pol);
  }
}

// Raw int32 output.
template <class Act, class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          class Policy = Sequential>
void gemm_packed_multiply(TensorView<AT, 2> a, const PackedWeightsMul& w,
                          TensorView<std::int32_t, 2> c, Policy&& policy = Policy{}) {
  gemm_packed_multiply<Act, Arch, Native>(a, w, RawInt32{}, c, std::forward<Policy>(policy));
}

}  // namespace vitc::kernels
