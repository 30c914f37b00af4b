// SPDX-License-Identifier: Apache-2.0
#pragma once
// Int-2^n-Softmax: softmax over the rows of integer attention scores, in integer arithmetic only.
//
// Why: attention probabilities P = softmax(Q·Kᵀ·scale) sit between two integer GEMMs. Computing
// them in float means a dequantize, an exp per score and a requantize; the integer exponentials of
// I-BERT, I-ViT and FQ-ViT replace the exp by shifts and one small multiply, so the scores never
// leave the integer domain and the probabilities come out as the uint8 operand of P·V.
//
// Input: a rows×cols view of int8 or int32 scores x with a real scale S (score = x·S), e.g. the
// Q·Kᵀ accumulators (int32, S = s_q·s_k/√d) or their int8 requantization (I-ViT, FQ-ViT). Output:
// a rows×cols uint8 view. Both views need a column stride of 1; any row strides; they must not
// overlap. Every row is independent (rows of length 0 are allowed, and so are rows of any length:
// sums are 64-bit).
//
// The exact integer formula (the scalar path is this definition; every SIMD path equals it bit
// for bit). Per row, M = max_i x_i, then for each element:
//
//   d   = max(x, M − Δ) − M              ∈ [−Δ, 0]; M − Δ saturates at INT32_MIN, so int32
//                                        extremes never overflow (I-ViT's clamp at n·x0_int,
//                                        applied before the subtraction)
//   y   = ⌊d / 2^p⌋                      p = pre_shift: the least shift with D <= 4096 (ShiftExp)
//                                        or 2048 (PolyExp), so 0 unless S < ~1/4000
//   ShiftExp (I-ViT Shiftmax, n = 15):   u = min(−(y + ⌊y/2⌋ − ⌊y/16⌋), n·D)        [×log2 e]
//   PolyExp  (I-BERT i-exp,  n = 30):    u = min(−y, n·D)
//   q   = ⌊u / D⌋,  rem = u − q·D        D = −x0_int: ShiftExp −⌊−1/S'⌋, PolyExp −⌊−0.6931/S'⌋,
//                                        S' = S·2^p
//   ShiftExp: mant = 2D − rem            (r/2 − x0_int)·2 with r = −rem: 2^f ≈ 1 + f/2
//   PolyExp:  mant = r·(r + b) + c       r = −rem, b = ⌊(0.96963238/0.35815147)/S'⌋,
//                                        c = ⌊(1/0.35815147)/S'²⌋ (I-BERT's int_polynomial)
//   E   = ⌊mant·2^a / 2^min(q + bias, 31)⌋        E ∈ [0, 2^k), E(0) ∈ [2^(k−1), 2^k)
//
// k = 15 for LinearProb, 22 for Log2Prob (whose levels reach 2^−15 of the maximum). For k = 15,
// E equals I-ViT's exp_int = ⌊(r/2 − x0_int)·2^(15−q)⌋ divided by 2^(15−a) and floored (a is the
// largest shift keeping E(0) < 2^k; bias = 1; for k = 22 the same formula with more bits), and
// I-BERT's ⌊z·2^(30−q)⌋ divided by 2^(30−a) (a may be negative, then bias = −a). This
// power-of-two requantization plays the role of I-BERT's QuantAct(16) on exp_int, done exactly;
// it keeps every lane in 32 bits (I-ViT and I-BERT compute in float32 tensors, where
// (r/2 − x0)·2^15 and z·2^30 exceed 32 bits). The scale of E cancels in the normalization.
//
// Output, with T = Σ_i E_i (int64, T >= E(0) >= 2^(k−1)):
//   LinearProb<b bits>, b ∈ [1, 8], Q = 2^b − 1, scale 1/Q (so p = 1 is representable):
//     K = the least integer with Q·2^K >= 2^15·T,  f = ⌊Q·2^K / T⌋ ∈ [2^15, 2^16),  s = K − 16
//     out = ⌊(⌊E·f / 2^16⌋ + 2^(s−1)) / 2^s⌋ ≈ round(Q·E/T)            (always <= Q)
//   Log2Prob<b bits>, b ∈ [1, 7] (FQ-ViT's Log-Int-Softmax): the level
//     out = min(log_round(t), 2^b),   t = ⌊(2T + E) / (2E)⌋ = round-half-up(T/E),
//     log_round(t) = ⌊log2 t⌋ + [t − 2^⌊log2 t⌋ >= 2^(⌊log2 t⌋−1)]           (FQ-ViT log_round)
//   p̂ = 2^−out for out < 2^b and p̂ = 0 for out = 2^b (FQ-ViT masks levels >= 2^b to zero and
//   clamps the rest to [0, 2^b − 1]; code 2^b is that zero, so the output needs b + 1 bits: a
//   4-bit log2 attention map holds codes 0..15 after clamping 16 to 15, i.e. 2^−15 for 0).
//   It is computed without a division per element: out = #{j ∈ 1..2^b : E <= θ_j} with
//   θ_j = ⌊2T / c_j⌋, c_1 = 3, c_j = 3·2^(j−1) − 1, since t >= τ_j ⇔ (2τ_j − 1)·E <= 2T for the
//   smallest t of level j, τ_1 = 2, τ_j = 3·2^(j−2) (j >= 2). E = 0 gives 2^b (zero); with
//   k = 22, E = 0 only below 2^−21 of the row maximum, so b > 4 loses its deepest levels.
//
// Error against float64 softmax of x·S (tests/kernels/test_softmax_int.cpp: rows of length 1 to
// 4096, scores spanning ±1 to ±20 in real units, 8-bit linear and 4-bit log2 outputs). The
// published algorithms round one octave (1 after the ×log2 e shifts, or ln 2) to a whole number
// of input steps, so the error grows with S:
//      input scale S         max |out/255 − p| ShiftExp / PolyExp    log2 level error (both)
//      (1/32, 1/8]           0.07 / 0.07                            <= 2
//      (1/256, 1/32]         0.035 / 0.017                          <= 1
//      <= 1/256              0.019 / 0.0035                         <= 1
// ShiftExp's floor is its shift approximations (log2 e ≈ 1.0111b and 2^f ≈ 1 + f/2: up to ~8%
// relative error in exp); PolyExp's is I-BERT's polynomial. FQ-ViT's log_round puts the level
// boundary at 1.5·2^k instead of √2·2^k, one level of the error above.
// Saturation: scores more than n octaves below the row max all count as exactly n octaves below:
// weight 2^−15 of the maximum for ShiftExp (as in I-ViT; 0 once E has 15 bits), 2^−30 for
// PolyExp (0). A row of equal scores (e.g. fully masked) comes out uniform.
//
// Paths (kernels/arch.hpp): Scalar (this definition, detail/softmax_int_scalar.hpp); Xsimd<A>
// (detail/softmax_int_simd.hpp, 32-bit lanes); Avx2 and Avx512Vnni (raw intrinsics under target
// attributes, the same 32-bit-lane body, which runs a row's tail as one more vector that
// overlaps the one before). For int8 scores with ShiftExp and LinearProb, Avx2 runs the formula
// on 16-bit lanes (exact: d ∈ [−255, 0] keeps every step within 16 bits). For int8 scores with
// LinearProb, Avx512Vnni reads E from a 256-entry table built by prepare_softmax from the scalar
// definition, with vpermi2w, and works on 16-bit lanes; in every other case Avx512Vnni masks the
// row tails, and for LinearProb keeps E as uint16 so that the output pass runs on 32 lanes.
// Log2Prob levels are found by a binary search over the thresholds with a 16-entry permute on
// x86 (b <= 4), by counting elsewhere. All bit-identical.
//
// Parameters are plain data prepared once (prepare_softmax); the kernel itself is noexcept after
// the shape checks of the entry point, and threads split the rows (core/parallel_for.hpp).

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/softmax_int_scalar.hpp"
#include "vitcompress/kernels/detail/softmax_int_simd.hpp"
#include "vitcompress/kernels/detail/softmax_int_types.hpp"

namespace vitc::kernels {

// Prepares the parameters of softmax_int for scores of real scale `input_scale` and `out_bits`
// output bits (LinearProb: 1..8; Log2Prob: 1..7). Throws ArgumentError naming the argument.
template <class Exp, class Out = LinearProb>
[[nodiscard]] SoftmaxParams<Exp, Out> prepare_softmax(float input_scale, int out_bits = 8) {
  static_assert(std::is_same_v<Exp, ShiftExp> || std::is_same_v<Exp, PolyExp>,
                "prepare_softmax: Exp must be ShiftExp or PolyExp");
  static_assert(std::is_same_v<Out, LinearProb> || std::is_same_v<Out, Log2Prob>,
                "prepare_softmax: Out must be LinearProb or Log2Prob");
  constexpr int kMaxBits = std::is_same_v<Out, LinearProb> ? 8 : 7;
  if (out_bits < 1 || out_bits > kMaxBits)
    VITC_THROW(ArgumentError("prepare_softmax: out_bits = " + std::to_string(out_bits) +
                             " must be in [1, " + std::to_string(kMaxBits) + "] for " +
                             std::string(Out::kName) + " output"));
  SoftmaxParams<Exp, Out> params;
  params.exp = prepare_int_exp<Exp>(input_scale, Exp::kClampSteps, 24,
                                    std::is_same_v<Out, LinearProb> ? 15 : 22,
                                    "prepare_softmax: input_scale");
  params.out_bits = out_bits;
  for (int d = 0; d < 256; ++d)
    params.int8_exp[static_cast<std::size_t>(d)] =
        detail::int_exp<Exp>(params.exp, std::max(-d, -params.exp.clamp));
  return params;
}

namespace detail {

template <class Tag, class In, class Exp, class Out>
void softmax_rows(Tag tag, const SoftmaxParams<Exp, Out>& params, const In* x, Index x_stride,
                  std::uint8_t* y, Index y_stride, Index rows, Index cols) {
  if constexpr (std::is_same_v<Tag, arch::Scalar>) {
    (void)tag;
    for (Index r = 0; r < rows; ++r)
      softmax_row_scalar(params, x + r * x_stride, y + r * y_stride, cols);
  } else {
    softmax_rows_simd(tag, params, x, x_stride, y, y_stride, rows, cols);
  }
}

}  // namespace detail

// y = softmax of every row of x (see the header comment for the exact formula). x holds int8_t or
// int32_t scores; y is uint8. Throws ShapeError when the shapes differ, ArgumentError when a
// column stride is not 1 or the forced path Arch is not available on this build or CPU.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class Exp, class Out,
          class InT, class Policy = Sequential>
void softmax_int(const SoftmaxParams<Exp, Out>& params, TensorView<InT, 2> x,
                 TensorView<std::uint8_t, 2> y, Policy&& policy = Policy{}) {
  using In = std::remove_const_t<InT>;
  static_assert(std::is_same_v<In, std::int8_t> || std::is_same_v<In, std::int32_t>,
                "softmax_int: scores must be int8_t or int32_t");
  if (x.extent(0) != y.extent(0) || x.extent(1) != y.extent(1))
    VITC_THROW(ShapeError("softmax_int: output y is " + vitc::detail::shape_string(y.shape()) +
                          " but scores x are " + vitc::detail::shape_string(x.shape())));
  const Index rows = x.extent(0), cols = x.extent(1);
  if (cols > 1 && rows > 0 && (x.stride(1) != 1 || y.stride(1) != 1))
    VITC_THROW(ArgumentError("softmax_int: x and y must have column stride 1"));
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError("softmax_int: the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (rows == 0 || cols == 0) return;
  const In* xp = x.data();
  std::uint8_t* yp = y.data();
  const Index xs = x.stride(0), ys = y.stride(0);
  auto run = [&](auto tag) {
    policy.parallel_for(rows, 1, [&](ParallelIndex begin, ParallelIndex end) {
      detail::softmax_rows(tag, params, xp + begin * xs, xs, yp + begin * ys, ys, end - begin,
                           cols);
    });
  };
  if constexpr (std::is_same_v<Arch, arch::Auto>)
    arch::dispatch<Native>(arch::best_arch<Native>(), run);
  else
    run(Arch{});
}

}  // namespace vitc::kernels
