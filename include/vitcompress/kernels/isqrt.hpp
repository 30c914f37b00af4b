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
// Algorithm (Newton from above, stopped when the step stops decreasing):
//     x₀ = 2^⌈b/2⌉ with b = bit length of n, so x₀ > √n;
//     x_{k+1} = ⌊(x_k + ⌊n/x_k⌋) / 2⌋ while x_{k+1} < x_k; the last x_k is ⌊√n⌋.
// For x > ⌊√n⌋ the step strictly decreases x and never goes below ⌊√n⌋ (AM–GM on integers), and at
// x = ⌊√n⌋ it does not decrease, so the loop stops exactly there. The start is within a factor 2
// of √n, so convergence is quadratic after the first step: at most 6 divisions for 64-bit n.
// No overflow: x_k ≤ 2^32 and ⌊n/x_k⌋ < 2^32 for 64-bit n, so their sum fits in 64 bits (and
// x_k ≤ 2^16 in the 32-bit case).
//
// Tested exhaustively for n < 2^24 and at m² − 1, m², m² + 1 across the 32- and 64-bit ranges,
// including UINT64_MAX (tests/kernels/test_isqrt_int.cpp).

#include <bit>
#include <concepts>
#include <cstdint>

namespace vitc::kernels {

// floor(√n), exact for every value of an unsigned integer type (uint32_t, uint64_t, ...).
template <std::unsigned_integral U>
[[nodiscard]] constexpr U isqrt(U n) noexcept {
  if (n < 2) return n;
  const int bits = std::bit_width(n);
  U x = U{1} << ((bits + 1) / 2);  // 2^⌈b/2⌉ > √n; at most 2^32 for 64-bit n
  U next = (x + n / x) / 2;
  while (next < x) {
    x = next;
    next = (x + n / x) / 2;
  }
  return x;
}

}  // namespace vitc::kernels
