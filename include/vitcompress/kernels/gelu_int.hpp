// SPDX-License-Identifier: Apache-2.0
#pragma once
// Integer GELU: I-BERT's I-GELU and I-ViT's ShiftGELU, int8 or int32 in, int8 out.
//
// Why: the MLP of every ViT block applies GELU to the fc1 output (197 × 3072 values per image in
// DeiT-base) between two integer GEMMs. An integer GELU keeps those values integer: I-GELU
// replaces erf by a clipped quadratic, ShiftGELU replaces it by x·σ(1.702x) with the shift-based
// exponential of Shiftmax (kernels/softmax_int.hpp).
//
// Input: a rows×cols view of int8 or int32 values x with real scale S (x·S), e.g. the fc1
// accumulators (int32, as in I-BERT) or their int8 requantization (as in I-ViT). Output: a
// rows×cols int8 view with real scale S_out (round to nearest, saturating). Column stride 1, any
// row strides, no overlap. Elementwise: rows only describe the memory layout.
//
// The exact integer formula (the scalar path is this definition; every SIMD path equals it):
//
//   x_p = ⌊clamp(x, in_min, in_max) / 2^p⌋ ∈ [−2^15, 2^15)      S_p = S·2^p
//     p = 0 for int8 inputs (and for int32 inputs whose scale already covers the range that
//     matters, max(130·S_out, 8) in real units); otherwise p is the least shift that covers it.
//   IGelu (I-BERT, S_e = S_p / 1.4142):
//     b = ⌊−1.769 / S_e⌋,  c = ⌊(1/−0.2888) / S_e²⌋,  a = min(|x_p|, −b)
//     y = sgn(x_p)·((a + b)² + c);  T = ⌊y / 2^n⌋ + ⌊1 / S_erf⌋,  S_erf = −0.2888·S_e²·2^n
//     g = x_p·T                      real value g·S_p·S_erf/2
//     (n = 14 in I-BERT for its int32 scales; here the least n with ⌊|c|/2^n⌋ < 2^14, so T keeps
//      14 to 15 bits at every scale and x_p·T fits in 32 bits)
//   ShiftGelu (I-ViT, with Shiftmax's E at scale 1.702·S_p, 23 octaves, E(0) < 2^15):
//     v = E(max(−|x_p|, −Δ)),  σ = ⌊2^15·num / (E(0) + v)⌋,  num = E(0) if x_p >= 0 else v
//     g = x_p·σ                      real value g·S_p·2^−15
//     (σ(z) = e^0/(e^0 + e^−z) for z >= 0 and e^z/(e^z + e^0) below: both exponents <= 0. I-ViT
//      subtracts the row maximum instead, which makes the result depend on the row and needs
//      e^(−max) > 1 when a row is all negative; its exact division is kept.)
//   out = sat8(⌊(⌊clamp(g, −G, G) / 2^w⌋·m + 2^(s−1)) / 2^s⌋)
//     with m/2^(w+s) ≈ M = (real scale of g)/S_out, |m| < 2^15 (15 significant bits), G the
//     smallest |g| whose output saturates (|M|·G >= 130), w = max(0, bitlen(G) − 15).
//
// Error against exact GELU (erf), measured by tests/kernels/test_gelu_int.cpp over every int8
// input at S ∈ [0.01, 0.1] and over int32 inputs at S ∈ [1e−5, 1e−3] spanning ±40:
//   |out·S_out − GELU(x·S)| <= S_out/2 + 0.026 (IGelu), S_out/2 + 0.031 (ShiftGelu; mostly the
//   x·σ(1.702x) approximation itself, up to 0.021 from GELU). With S_out = max|GELU|/127 that is
//   <= 1.8 (IGelu) and <= 1.9 (ShiftGelu) output LSB, and <= 0.8% of the int8 input range.
//
// Paths (kernels/arch.hpp): Scalar (the definition, detail/gelu_int_types.hpp); Xsimd<A>, Avx2,
// Avx512Vnni on 32-bit lanes (detail/gelu_int_simd.hpp); for int8 inputs every SIMD path reads a
// 256-entry table of outputs built by prepare_gelu from the definition (Avx512Vnni: vpermi2w;
// Avx2: 16 vpshufb; Xsimd: scalar loads). ShiftGelu
// with int32 inputs: prepare_gelu also evaluates the definition at every x_p ∈ [−2^15, 2^15)
// into GeluParams::int32_table (64 KiB, about 1 ms), and every SIMD path reads its output from
// it, one byte load per element, instead of a 15-step division per lane.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gelu_int_simd.hpp"
#include "vitcompress/kernels/detail/gelu_int_types.hpp"
#include "vitcompress/kernels/detail/softmax_int_types.hpp"

namespace vitc::kernels {

// Prepares gelu_int for inputs of type In (int8_t or int32_t) at real scale `input_scale` and
// int8 outputs at `output_scale`. Throws ArgumentError naming the argument when a scale is not
// finite and positive or the pair cannot be represented.
template <class Policy, class In = std::int8_t>
[[nodiscard]] GeluParams<Policy, In> prepare_gelu(float input_scale, float output_scale) {
  static_assert(std::is_same_v<Policy, IGelu> || std::is_same_v<Policy, ShiftGelu>,
                "prepare_gelu: Policy must be IGelu or ShiftGelu");
  static_assert(std::is_same_v<In, std::int8_t> || std::is_same_v<In, std::int32_t>,
                "prepare_gelu: In must be int8_t or int32_t");
  const double s = input_scale, so = output_scale;
  if (!(s > 0.0) || !std::isfinite(s))
    VITC_THROW(ArgumentError("prepare_gelu: input_scale = " + detail::scale_string(s) +
                             ": must be finite and positive"));
  if (!(so > 0.0) || !std::isfinite(so))
    VITC_THROW(ArgumentError("prepare_gelu: output_scale = " + detail::scale_string(so) +
                             ": must be finite and positive"));
  GeluParams<Policy, In> p;
  // The real range that matters: up to positive saturation of the output, and far enough below
  // zero that GELU is 0 (|GELU(−8)| < 1e−14); no more than the input type can reach.
  const double reach = std::is_same_v<In, std::int8_t> ? 128.0 * s : 2147483648.0 * s;
  const double range = std::min(std::max(130.0 * so, 8.0), reach);
  auto sp_of = [&](int shift) { return std::ldexp(s, shift); };
  while (32767.0 * sp_of(p.pre_shift) < range) ++p.pre_shift;
  if constexpr (std::is_same_v<Policy, IGelu>) {
    // b² and c must fit in 31 bits.
    while (1.769 * 1.4142 / sp_of(p.pre_shift) >= 46340.0 ||
           (1.0 / 0.2888) * (1.4142 * 1.4142) / (sp_of(p.pre_shift) * sp_of(p.pre_shift)) >=
               double(1 << 30))
      ++p.pre_shift;
  }
  if (p.pre_shift > 16)
    VITC_THROW(ArgumentError("prepare_gelu: input_scale = " + detail::scale_string(s) +
                             " is too fine for output_scale = " + detail::scale_string(so)));
  const double sp = sp_of(p.pre_shift);
  p.in_min = static_cast<std::int32_t>(std::max<std::int64_t>(
      -(std::int64_t{1} << (15 + p.pre_shift)), std::numeric_limits<std::int32_t>::min()));
  p.in_max = static_cast<std::int32_t>(std::min<std::int64_t>(
      (std::int64_t{1} << (15 + p.pre_shift)) - 1, std::numeric_limits<std::int32_t>::max()));
  double m_real;  // real scale of g over the output scale
  if constexpr (std::is_same_v<Policy, IGelu>) {
    const double se = sp / 1.4142;
    p.erf_b = static_cast<std::int32_t>(std::floor(-1.769 / se));
    p.erf_c = static_cast<std::int32_t>(std::floor((1.0 / -0.2888) / (se * se)));
    if (p.erf_b >= 0 || p.erf_c >= 0)
      VITC_THROW(ArgumentError("prepare_gelu: input_scale = " + detail::scale_string(s) +
                               ": too coarse for the I-GELU polynomial"));
    const std::int64_t abs_c = -std::int64_t{p.erf_c};
    while ((abs_c >> p.erf_shift) >= (1 << 14)) ++p.erf_shift;
    const double s_erf = -0.2888 * se * se * std::ldexp(1.0, p.erf_shift);
    p.erf_one = static_cast<std::int32_t>(std::floor(1.0 / s_erf));
    m_real = sp * s_erf / 2.0 / so;
  } else {
    p.exp = prepare_int_exp<ShiftExp>(1.702 * sp, ShiftGelu::kClampSteps, 24, 15,
                                      "prepare_gelu: input_scale");
    m_real = sp / 32768.0 / so;
  }
  const double mag = std::abs(m_real);
  p.g_limit = static_cast<std::int32_t>(std::min(std::ceil(130.0 / mag), double(1 << 30)));
  while ((std::int64_t{p.g_limit} >> p.g_shift) >= (1 << 15)) ++p.g_shift;
  p.out_shift = 30;
  while (p.out_shift > 0 && mag * std::ldexp(1.0, p.g_shift + p.out_shift) > 32767.0) --p.out_shift;
  if (p.out_shift < 1)
    VITC_THROW(ArgumentError("prepare_gelu: output_scale = " + detail::scale_string(so) +
                             " is too fine for input_scale = " + detail::scale_string(s)));
  p.multiplier =
      static_cast<std::int32_t>(std::lround(m_real * std::ldexp(1.0, p.g_shift + p.out_shift)));
  if constexpr (std::is_same_v<In, std::int8_t>) {
    for (int x = -128; x < 128; ++x)
      p.int8_table[static_cast<std::size_t>(x + 128)] = detail::gelu_int_scalar(p, x);
  }
  if constexpr (std::is_same_v<In, std::int32_t> && std::is_same_v<Policy, ShiftGelu>) {
    // Only x_p ∈ [in_min >> p, in_max >> p] occurs; the other entries stay 0.
    p.int32_table.assign(detail::kGeluInt32TableSize, std::int8_t{0});
    for (std::int32_t xp = p.in_min >> p.pre_shift; xp <= (p.in_max >> p.pre_shift); ++xp)
      p.int32_table[static_cast<std::size_t>(xp + 32768)] =
          static_cast<std::int8_t>(detail::gelu_requantize(p, detail::gelu_int_g_xp(p, xp)));
  }
  return p;
}

namespace detail {

template <class Tag, class Policy, class In>
void gelu_rows(Tag tag, const GeluParams<Policy, In>& params, const In* x, Index x_stride,
               std::int8_t* y, Index y_stride, Index rows, Index cols) {
  if constexpr (std::is_same_v<Tag, arch::Scalar>) {
    (void)tag;
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < cols; ++c)
        y[r * y_stride + c] = gelu_int_scalar(params, x[r * x_stride + c]);
  } else {
    gelu_rows_simd(tag, params, x, x_stride, y, y_stride, rows, cols);
  }
}

}  // namespace detail

// y = GELU(x) requantized to int8 (see the header comment for the exact formula). x's element
// type must be the In of the parameters. Throws ShapeError when the shapes differ,
// ArgumentError when a column stride is not 1 or the forced path Arch is not available.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class Policy, class In,
          class InT, class Policy2 = Sequential>
void gelu_int(const GeluParams<Policy, In>& params, TensorView<InT, 2> x,
              TensorView<std::int8_t, 2> y, Policy2&& policy = Policy2{}) {
  static_assert(std::is_same_v<std::remove_const_t<InT>, In>,
                "gelu_int: x's element type must match the In of prepare_gelu<Policy, In>");
  if (x.extent(0) != y.extent(0) || x.extent(1) != y.extent(1))
    VITC_THROW(ShapeError("gelu_int: output y is " + vitc::detail::shape_string(y.shape()) +
                          " but x is " + vitc::detail::shape_string(x.shape())));
  const Index rows = x.extent(0), cols = x.extent(1);
  if (cols > 1 && rows > 0 && (x.stride(1) != 1 || y.stride(1) != 1))
    VITC_THROW(ArgumentError("gelu_int: x and y must have column stride 1"));
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError("gelu_int: the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (rows == 0 || cols == 0) return;
  const In* xp = x.data();
  std::int8_t* yp = y.data();
  const Index xs = x.stride(0), ys = y.stride(0);
  auto run = [&](auto tag) {
    policy.parallel_for(rows, 1, [&](ParallelIndex begin, ParallelIndex end) {
      detail::gelu_rows(tag, params, xp + begin * xs, xs, yp + begin * ys, ys, end - begin, cols);
    });
  };
  if constexpr (std::is_same_v<Arch, arch::Auto>)
    arch::dispatch<Native>(arch::best_arch<Native>(), run);
  else
    run(Arch{});
}

}  // namespace vitc::kernels
