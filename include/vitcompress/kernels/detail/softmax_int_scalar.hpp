// SPDX-License-Identifier: Apache-2.0
#pragma once
// Int-2^n-Softmax, scalar reference: the definition every other path equals bit for bit (formula
// in kernels/softmax_int.hpp), plus the per-row normalization constants all paths share.

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/detail/softmax_int_types.hpp"

namespace vitc::kernels::detail {

// The smallest value a score is raised to before subtracting the row max m: m − Δ, saturated.
[[nodiscard]] constexpr std::int32_t softmax_floor(std::int32_t m, std::int32_t clamp) noexcept {
  return static_cast<std::int32_t>(
      std::max<std::int64_t>(std::int64_t{m} - clamp, std::numeric_limits<std::int32_t>::min()));
}

// LinearProb, per row: out = ⌊(⌊E·factor / 2^16⌋ + 2^(shift−1)) / 2^shift⌋.
struct LinearNorm {
  std::int32_t factor = 0;  // ⌊Q·2^K / T⌋ ∈ [2^15, 2^16)
  std::int32_t shift = 0;   // K − 16 >= 6; >= 17 means every output is 0
};

// Requires E < 2^15 (exp_bits = 15), so that E·factor < 2^31.
[[nodiscard]] inline LinearNorm linear_norm(std::int64_t total, std::int32_t out_bits) noexcept {
  VITC_DCHECK(total >= (1 << 14) && total < (std::int64_t{1} << 46));
  const std::int64_t q = (std::int64_t{1} << out_bits) - 1;
  const std::int64_t target = total << 15;
  int k = std::max(0, static_cast<int>(std::bit_width(static_cast<std::uint64_t>(target))) -
                          static_cast<int>(std::bit_width(static_cast<std::uint64_t>(q))) - 1);
  while ((q << k) < target) ++k;
  while (k > 0 && (q << (k - 1)) >= target) --k;
  return {static_cast<std::int32_t>((q << k) / total), k - 16};
}

[[nodiscard]] constexpr std::uint8_t linear_out(const LinearNorm& n, std::int32_t e) noexcept {
  const std::int64_t hi = (std::int64_t{e} * n.factor) >> 16;
  return static_cast<std::uint8_t>((hi + (std::int64_t{1} << (n.shift - 1))) >> n.shift);
}

// Log2Prob, per row: out = #{j ∈ 1..levels : E <= theta[j − 1]}.
struct Log2Norm {
  std::int32_t levels = 0;  // 2^b
  std::int32_t count = 0;   // thresholds >= 1 (the later ones are 0 and only match E = 0)
  std::array<std::int32_t, 128> theta{};
};

// ⌊x / c_j⌋ for the constant divisors c_1 = 3, c_j = 3·2^(j−1) − 1 (j = 2..56) and any
// x < 2^56, by a 128-bit multiply with m_j = ⌈2^(56+ℓ) / c_j⌉, ℓ = bit length of c_j
// (Granlund–Montgomery: the rounding error m_j·c_j − 2^(56+ℓ) < c_j <= 2^ℓ keeps x·error below
// 2^(56+ℓ), so the quotient is exact). Avoids up to 56 hardware divisions per row; compilers
// without a 128-bit integer type divide.
[[nodiscard]] constexpr std::uint64_t log2_divisor(int j) noexcept {
  return j == 1 ? 3 : 3 * (std::uint64_t{1} << (j - 1)) - 1;
}

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 Uint128;

struct Log2Magic {
  std::uint64_t m[57] = {};
  int shift[57] = {};
};

[[nodiscard]] constexpr Log2Magic make_log2_magic() noexcept {
  Log2Magic t;
  for (int j = 1; j <= 56; ++j) {
    const std::uint64_t c = log2_divisor(j);
    const int l = static_cast<int>(std::bit_width(c));
    const Uint128 two = Uint128{1} << (56 + l);
    const Uint128 m = (two + c - 1) / c;  // < 2^57 for c >= 3... at most 2^(56+l)/2^(l−1) = 2^57
    t.m[j] = static_cast<std::uint64_t>(m);
    t.shift[j] = 56 + l;
  }
  return t;
}

inline constexpr Log2Magic kLog2Magic = make_log2_magic();

[[nodiscard]] inline std::uint64_t log2_threshold(std::uint64_t twice_total, int j) noexcept {
  return static_cast<std::uint64_t>((Uint128{twice_total} * kLog2Magic.m[j]) >>
                                    kLog2Magic.shift[j]);
}
#else
[[nodiscard]] inline std::uint64_t log2_threshold(std::uint64_t twice_total, int j) noexcept {
  return twice_total / log2_divisor(j);
}
#endif

[[nodiscard]] inline Log2Norm log2_norm(std::int64_t total, std::int32_t out_bits) noexcept {
  VITC_DCHECK(total > 0 && total < (std::int64_t{1} << 55));
  Log2Norm n;
  n.levels = 1 << out_bits;
  const std::uint64_t twice = 2 * static_cast<std::uint64_t>(total);
  const int last = std::min<std::int32_t>(n.levels, 56);  // c_j > 2T beyond: θ_j = 0
  for (int j = 1; j <= last; ++j) {
    const std::uint64_t theta = log2_threshold(twice, j);
    n.theta[static_cast<std::size_t>(j - 1)] =
        static_cast<std::int32_t>(std::min<std::uint64_t>(theta, std::uint64_t{1} << 30));
    if (theta >= 1) n.count = j;
  }
  return n;
}

[[nodiscard]] constexpr std::uint8_t log2_out(const Log2Norm& n, std::int32_t e) noexcept {
  std::int32_t code = 0;
  for (std::int32_t j = 0; j < n.levels; ++j) code += e <= n.theta[static_cast<std::size_t>(j)];
  return static_cast<std::uint8_t>(code);
}

// One row of the definition. x and y hold `cols` elements.
template <class Exp, class Out, class In>
void softmax_row_scalar(const SoftmaxParams<Exp, Out>& params, const In* x, std::uint8_t* y,
                        Index cols) noexcept {
  if (cols <= 0) return;
  std::int32_t m = x[0];
  for (Index i = 1; i < cols; ++i) m = std::max<std::int32_t>(m, x[i]);
  const std::int32_t lo = softmax_floor(m, params.exp.clamp);
  auto e_of = [&](Index i) {
    return int_exp<Exp>(params.exp, std::max<std::int32_t>(x[i], lo) - m);
  };
  std::int64_t total = 0;
  for (Index i = 0; i < cols; ++i) total += e_of(i);
  if constexpr (std::is_same_v<Out, LinearProb>) {
    const LinearNorm n = linear_norm(total, params.out_bits);
    for (Index i = 0; i < cols; ++i) y[i] = linear_out(n, e_of(i));
  } else {
    const Log2Norm n = log2_norm(total, params.out_bits);
    for (Index i = 0; i < cols; ++i) y[i] = log2_out(n, e_of(i));
  }
}

}  // namespace vitc::kernels::detail
