// SPDX-License-Identifier: Apache-2.0
#pragma once
// Exact integer square root: isqrt(n) = floor(√n) for every unsigned n, in integer arithmetic only.
//
// Why it matters: Int-LayerNorm (kernels/layernorm_int.hpp) divides by the integer standard
// deviation floor(√Σ(x − mean)²). I-BERT left a float sqrt in its code ("to be replaced with an
// integer-sqrt kernel"), and I-ViT's replacement runs a fixed 10 Newton steps from k = 2^16:
//     k ← ⌊(k + ⌊n/k⌋) / 2⌋
// Ten steps from 2^16 mostly halve k, so small inputs are far off (n = 100 gives 64, n = 10000
// gives 108), and large ones stop one short at n = m² − 1 (e.g. 2^22 − 1 gives 2048). The tests
// keep that algorithm beside this one to show it.
//
// Algorithm (Newton from above, started from a table and stopped by a multiplication):
//     x₀ = ⌈T[i]·2^(h−8)⌉ where n = i·2^(2h) + rest with i the top 7 or 8 bits of n and
//          T[i] = ⌈√((i + 1)·2^16)⌉ (256 entries), so √n < x₀ < 1.01·√n + 1;
//     x_{k+1} = ⌊(x_k + ⌊n/x_k⌋) / 2⌋ until x_k² <= n; that x_k is ⌊√n⌋.
// Every x_k >= ⌊√n⌋ (AM–GM on integers), and x > ⌊√n⌋ implies x² > n, so the stopping test is
// exact; while x > ⌊√n⌋ the step strictly decreases x, so the loop ends. With the start that
// close, convergence is quadratic from the first step: at most two divisions up to 42-bit n (one
// for ~96% of 30-bit n, the LayerNorm case), at most three for 64-bit n, against five or six
// from a power-of-two start (counted over random n of every even bit length during development).
// No overflow: x_k <= 2^32 and ⌊n/x_k⌋ < 2^32 for 64-bit n, so their sum fits in 64 bits, and x²
// is only formed for x < 2^(digits/2).
//
// Tested exhaustively for n < 2^24 and at m² − 1, m², m² + 1 across the 32- and 64-bit ranges,
// including UINT64_MAX (tests/kernels/test_isqrt_int.cpp).

#include <array>
#include <bit>
#include <concepts>
#include <cstdint>
#include <limits>

namespace vitc::kernels {

namespace detail {

// T[i] = ⌈√((i + 1)·2^16)⌉: the square root of the top bits of n, rounded up, with 8 fractional
// bits (T[255] = 4096).
inline constexpr auto kIsqrtStart = [] {
  std::array<std::uint16_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    const std::uint32_t n = (i + 1) << 16;
    std::uint32_t lo = 0, hi = 4097;  // ⌈√n⌉ in (lo, hi]: lo² < n <= hi²
    while (hi - lo > 1) {
      const std::uint32_t mid = (lo + hi) / 2;
      (mid * mid < n ? lo : hi) = mid;
    }
    table[i] = static_cast<std::uint16_t>(hi);
  }
  return table;
}();

}  // namespace detail

// floor(√n), exact for every value of an unsigned integer type (uint32_t, uint64_t, ...).
template <std::unsigned_integral U>
[[nodiscard]] constexpr U isqrt(U n) noexcept {
  static_assert(std::numeric_limits<U>::digits <= 64, "isqrt: at most 64-bit integers");
  if (n < 2) return n;
  // n < (i + 1)·2^(2h) with i = ⌊n / 2^(2h)⌋ < 256, so √n < T[i]·2^(h−8).
  const int bits = std::bit_width(n);
  const int half = bits > 8 ? (bits - 7) / 2 : 0;
  const std::uint64_t top = detail::kIsqrtStart[static_cast<std::size_t>(n >> (2 * half))];
  U x = half >= 8 ? static_cast<U>(top << (half - 8))
                  : static_cast<U>((top + (std::uint64_t{1} << (8 - half)) - 1) >> (8 - half));
  constexpr U kMaxRoot =
      static_cast<U>((std::uint64_t{1} << (std::numeric_limits<U>::digits / 2)) - 1);
  while (x > kMaxRoot || x * x > n) x = static_cast<U>((x + n / x) / 2);
  return x;
}

}  // namespace vitc::kernels
