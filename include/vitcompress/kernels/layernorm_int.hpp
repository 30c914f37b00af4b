// SPDX-License-Identifier: Apache-2.0
#pragma once
// Int-LayerNorm: LayerNorm over the last dimension of integer activations, int8 out.
//
// Why: every ViT block normalizes its residual stream twice. The residual stream is where
// quantization hurts most (a few channels carry outliers 10–100× the rest), so it arrives here as
// int16, as int32 sums, or as int8 with FQ-ViT's per-channel power-of-two factors (PTF: channel c
// holds x_c at scale s·2^α_c, α_c ∈ {0..3}). The integer version (I-BERT, I-ViT, FQ-ViT 'int'
// mode) needs an integer mean, variance and an exact integer square root (kernels/isqrt.hpp:
// I-ViT's fixed 10 Newton steps are wrong), then a fixed-point division and the affine γ, β.
//
// Input: a rows×C view of int8, int16 or int32 x (symmetric, zero point 0) with base scale s:
// x_c·2^α_c·s is the real value. Output: a rows×C int8 view with scale S_out (round half up,
// saturating). Column stride 1, any row strides, no overlap. C <= 16384.
//
// The exact integer formula (the scalar path is this definition; every SIMD path equals it):
//
//   λ    = Q − bitlen(max_c |x_c|·2^α_c)           per row; Q = 13 for int8, 24 otherwise
//   x̃_c  = ⌊x_c·2^(α_c + λ)⌋                      |x̃| < 2^Q: each row is rescaled to Q bits
//                                                  (row block floating point), so the integer
//                                                  mean below is within 2^−Q of the row maximum
//   S1 = Σ x̃_c,  S2 = Σ x̃_c²                      64-bit sums (exact for C <= 16384)
//   m    = ⌊(2·S1 + C) / (2C)⌋                     mean, rounded half up (I-ViT rounds the mean
//                                                  to a whole input step, far off for narrow rows)
//   var  = S2 − m·(2·S1 − C·m) + ⌊E·4^λ / 2^32⌋     = Σ(x̃ − m)² + C·eps/(s·2^−λ)², exact
//   t    = max(0, ⌊(30 − bitlen(var)) / 2⌋)       extra fractional bits for small variances
//   std  = isqrt(var·4^t)                          exact ⌊2^t·√var⌋ (kernels/isqrt.hpp)
//   L = min(bitlen(std), Q + 1 + t),  R = min(⌊2^(14+L) / std⌋, 2^15 − 1)   (R = 0 if std = 0)
//   a_c  = (x̃_c − m)·2^(t+15−L), floored when t + 15 − L < 0     |a| < 2^15, since
//                                                  |x̃_c − m|·2^t <= std and |x̃_c − m| < 2^(Q+1)
//   n_c  = ⌊(a_c·R + 2^14) / 2^15⌋                 ≈ 2^14·(x̃_c − m)·2^t/std, |n| <= 2^14 + 1
//   h_c  = sat16(⌊(n_c·G_c + 2^14) / 2^15⌋ + B_c)
//   out  = sat8(⌊h_c / 2^f⌋)
// with, prepared once from γ, β, S_out (prepare_layernorm):
//   G_c = round(γ_c·√C·2^(1+f) / S_out),  B_c = sat16(round(β_c·2^f / S_out) + 2^(f−1)),
//   f ∈ [0, 6] the largest with every |G_c| <= 2^15 − 1,  E = round(C·eps / s² · 2^32).
// So out ≈ round((γ_c·(x_c − mean)/√(var/C + eps) + β_c) / S_out): n_c/2^14·√C is the normalized
// value. The two 15-bit products are ⌊(a·b + 2^14)/2^15⌋, i.e. vpmulhrsw, and with int8 inputs
// every intermediate fits in 16 bits, which the AVX2/AVX-512 paths use.
//
// Bit widths and overflow: int8 sums and squares (< 2^26) fit in 32-bit lanes per block of 8 to 16
// vectors and are added into 64-bit totals (S1 < 2^38, S2 < 2^62 for C <= 16384); squares of
// int16/int32 values (< 2^48) are accumulated in 64-bit lanes (x86: vpmuldq) or split into three
// partial products below 2^24 (xsimd). Rows of int32 values above 2^24 lose their low bits
// (λ < 0), a relative change below 2^−23 of the row's largest value.
//
// Relation to the published code: I-BERT/I-ViT compute mean and Σ(x − mean)² the same way but
// divide with factor = ⌊(2^31 − 1)/std⌋ in float tensors and ignore eps (std = 0 divides by
// zero); I-ViT's std uses 10 fixed Newton steps (wrong, see isqrt.hpp); FQ-ViT computes
// √(C·Σx² − (Σx)²) in float. Here every step is integer and exact up to the stated floors.
//
// Error against float LayerNorm (float64 γ·(x − μ)/√(σ² + eps) + β on the dequantized input),
// measured by tests/kernels/test_layernorm_int.cpp over C ∈ {2, 17, 192, 384, 768, 4096}, int8
// (with and without PTF), int16 and int32 inputs (narrow rows, outlier channels, rows above 2^24)
// with S_out = 4/127: <= 1.1 output LSB wherever the output does not saturate. 0.5 of it is the
// final rounding; the rest comes from the 15-bit intermediates n (2^14/√C per unit of the
// normalized value) and G·n (f fractional bits, f = 2 at C = 4096 here), largest for large C.
//
// Paths (kernels/arch.hpp): Scalar (detail/layernorm_int_types.hpp); Xsimd<A>, Avx2, Avx512Vnni on
// 32-bit lanes for int16/int32, and 16-bit lanes for int8 on Avx2 and Avx512Vnni, and for int16
// rows with |x_c·2^α_c| < 2^14 on Avx2 (detail/layernorm_int_simd.hpp). All bit-identical.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/layernorm_int_simd.hpp"
#include "vitcompress/kernels/detail/layernorm_int_types.hpp"
#include "vitcompress/kernels/detail/softmax_int_types.hpp"

namespace vitc::kernels {

// Prepares layernorm_int for C = gamma.size() channels.
//   gamma, beta    the LayerNorm affine parameters (C each, finite);
//   input_scale    s, the base scale of the input (channel c: s·2^ptf_shift[c]);
//   output_scale   S_out of the int8 output;
//   eps            LayerNorm's epsilon (DeiT: 1e-6), folded into the integer variance;
//   ptf_shift      α_c ∈ {0,1,2,3} per channel (FQ-ViT PTF), or empty for all zeros.
// Throws ShapeError (beta or ptf_shift of the wrong size) or ArgumentError naming the argument.
[[nodiscard]] inline LayerNormParams prepare_layernorm(
    std::span<const float> gamma, std::span<const float> beta, float input_scale,
    float output_scale, float eps = 1e-6f, std::span<const std::uint8_t> ptf_shift = {}) {
  const Index c = static_cast<Index>(gamma.size());
  if (c < 1 || c > detail::kLayerNormMaxChannels)
    VITC_THROW(ArgumentError("prepare_layernorm: gamma has " + std::to_string(c) +
                             " channels; expected 1 to " +
                             std::to_string(detail::kLayerNormMaxChannels)));
  if (static_cast<Index>(beta.size()) != c)
    VITC_THROW(ShapeError("prepare_layernorm: beta has " + std::to_string(beta.size()) +
                          " values but gamma has " + std::to_string(c)));
  if (!ptf_shift.empty() && static_cast<Index>(ptf_shift.size()) != c)
    VITC_THROW(ShapeError("prepare_layernorm: ptf_shift has " + std::to_string(ptf_shift.size()) +
                          " values but gamma has " + std::to_string(c)));
  const double s = input_scale, so = output_scale, e = eps;
  if (!(s > 0.0) || !std::isfinite(s))
    VITC_THROW(ArgumentError("prepare_layernorm: input_scale = " + detail::scale_string(s) +
                             ": must be finite and positive"));
  if (!(so > 0.0) || !std::isfinite(so))
    VITC_THROW(ArgumentError("prepare_layernorm: output_scale = " + detail::scale_string(so) +
                             ": must be finite and positive"));
  if (!(e >= 0.0) || !std::isfinite(e))
    VITC_THROW(ArgumentError("prepare_layernorm: eps = " + detail::scale_string(e) +
                             ": must be finite and non-negative"));
  double max_gamma = 0;
  for (Index i = 0; i < c; ++i) {
    const auto ch = static_cast<std::size_t>(i);
    if (!std::isfinite(gamma[ch]))
      VITC_THROW(
          ArgumentError("prepare_layernorm: gamma[" + std::to_string(i) + "] is not finite"));
    if (!std::isfinite(beta[ch]))
      VITC_THROW(ArgumentError("prepare_layernorm: beta[" + std::to_string(i) + "] is not finite"));
    if (!ptf_shift.empty() && ptf_shift[ch] > 3)
      VITC_THROW(ArgumentError("prepare_layernorm: ptf_shift[" + std::to_string(i) +
                               "] = " + std::to_string(ptf_shift[ch]) + " is outside [0, 3]"));
    max_gamma = std::max(max_gamma, std::abs(double{gamma[ch]}));
  }
  LayerNormParams p;
  p.channels = c;
  const double root_c = std::sqrt(static_cast<double>(c));
  p.frac_bits = 6;
  while (p.frac_bits >= 0 &&
         std::round(max_gamma * root_c * std::ldexp(1.0, 1 + p.frac_bits) / so) > 32767.0)
    --p.frac_bits;
  if (p.frac_bits < 0)
    VITC_THROW(ArgumentError("prepare_layernorm: max|gamma|·sqrt(C) / output_scale = " +
                             detail::scale_string(max_gamma * root_c / so) +
                             " exceeds 16383; output_scale is too fine for this gamma"));
  p.ptf_shift.resize(static_cast<std::size_t>(c), 0);
  p.ptf_scale.resize(static_cast<std::size_t>(c), 1);
  p.gain.resize(static_cast<std::size_t>(c));
  p.bias.resize(static_cast<std::size_t>(c));
  for (Index i = 0; i < c; ++i) {
    const auto ch = static_cast<std::size_t>(i);
    if (!ptf_shift.empty()) p.ptf_shift[ch] = ptf_shift[ch];
    p.ptf_scale[ch] = static_cast<std::int16_t>(1 << p.ptf_shift[ch]);
    p.gain[ch] = static_cast<std::int16_t>(
        std::lround(double{gamma[ch]} * root_c * std::ldexp(1.0, 1 + p.frac_bits) / so));
    const double b = std::round(double{beta[ch]} * std::ldexp(1.0, p.frac_bits) / so) +
                     (p.frac_bits > 0 ? std::ldexp(1.0, p.frac_bits - 1) : 0.0);
    p.bias[ch] = static_cast<std::int16_t>(std::clamp(b, -32768.0, 32767.0));
  }
  const double eps_q32 = std::round(std::ldexp(static_cast<double>(c) * e / (s * s), 32));
  p.eps_q32 = eps_q32 >= 0x1p62 ? (std::uint64_t{1} << 62) : static_cast<std::uint64_t>(eps_q32);
  return p;
}

namespace detail {

template <class Tag, class In>
void layernorm_rows(Tag tag, const LayerNormParams& params, const In* x, Index x_stride,
                    std::int8_t* y, Index y_stride, Index rows) {
  if constexpr (std::is_same_v<Tag, arch::Scalar>) {
    (void)tag;
    for (Index r = 0; r < rows; ++r)
      layernorm_row_scalar(params, x + r * x_stride, y + r * y_stride);
  } else {
    layernorm_rows_simd(tag, params, x, x_stride, y, y_stride, rows);
  }
}

}  // namespace detail

// y = LayerNorm of every row of x, requantized to int8 (see the header comment for the formula).
// x holds int8_t, int16_t or int32_t; both views are rows×C with C = params.channels. Throws
// ShapeError when a shape differs, ArgumentError when a column stride is not 1 or the forced
// path Arch is not available on this build or CPU.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class InT,
          class Policy = Sequential>
void layernorm_int(const LayerNormParams& params, TensorView<InT, 2> x,
                   TensorView<std::int8_t, 2> y, Policy&& policy = Policy{}) {
  using In = std::remove_const_t<InT>;
  static_assert(std::is_same_v<In, std::int8_t> || std::is_same_v<In, std::int16_t> ||
                    std::is_same_v<In, std::int32_t>,
                "layernorm_int: x must hold int8_t, int16_t or int32_t");
  if (x.extent(1) != params.channels)
    VITC_THROW(ShapeError("layernorm_int: x is " + vitc::detail::shape_string(x.shape()) +
                          " but the parameters have " + std::to_string(params.channels) +
                          " channels"));
  if (y.extent(0) != x.extent(0) || y.extent(1) != x.extent(1))
    VITC_THROW(ShapeError("layernorm_int: output y is " + vitc::detail::shape_string(y.shape()) +
                          " but x is " + vitc::detail::shape_string(x.shape())));
  const Index rows = x.extent(0), cols = x.extent(1);
  if (cols > 1 && rows > 0 && (x.stride(1) != 1 || y.stride(1) != 1))
    VITC_THROW(ArgumentError("layernorm_int: x and y must have column stride 1"));
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError("layernorm_int: the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (rows == 0 || cols == 0) return;
  const In* xp = x.data();
  std::int8_t* yp = y.data();
  const Index xs = x.stride(0), ys = y.stride(0);
  auto run = [&](auto tag) {
    policy.parallel_for(rows, 1, [&](ParallelIndex begin, ParallelIndex end) {
      detail::layernorm_rows(tag, params, xp + begin * xs, xs, yp + begin * ys, ys, end - begin);
    });
  };
  if constexpr (std::is_same_v<Arch, arch::Auto>)
    arch::dispatch<Native>(arch::best_arch<Native>(), run);
  else
    run(Arch{});
}

}  // namespace vitc::kernels
