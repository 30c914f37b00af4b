// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "vitcompress/kernels/fixed_point.hpp"

namespace {

using vitc::kernels::fixed_point_from_scale;
using vitc::kernels::FixedPointMultiplier;
using vitc::kernels::multiply_by_fixed_point;
using vitc::kernels::rounding_divide_by_pot;
using vitc::kernels::saturating_rounding_doubling_high_mul;
__extension__ typedef __int128 I128;  // GCC/Clang 128-bit integer

constexpr std::int32_t kMin = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t kMax = std::numeric_limits<std::int32_t>::max();

I128 floor_div(I128 a, I128 b) {  // b > 0
  I128 q = a / b;
  if ((a % b) != 0 && a < 0) --q;
  return q;
}

// The header's formula, evaluated independently in 128-bit arithmetic.
std::int32_t exact_fixed_point(std::int32_t x, std::int32_t m, std::int32_t shift) {
  const int l = shift < 0 ? -shift : 0, r = shift > 0 ? shift : 0;
  I128 xs = static_cast<I128>(x) << l;
  if (xs > kMax) xs = kMax;
  if (xs < kMin) xs = kMin;
  I128 h;
  if (xs == kMin && m == kMin)
    h = kMax;
  else
    h = floor_div(xs * m + (I128{1} << 30), I128{1} << 31);
  if (r == 0) return static_cast<std::int32_t>(h);
  const I128 mag = h < 0 ? -h : h;
  const I128 q = (mag + (I128{1} << (r - 1))) >> r;  // half away from zero
  return static_cast<std::int32_t>(h < 0 ? -q : q);
}

}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("fixed point: hand-computed values") {
    // SRDHM: floor((a·b + 2^30) / 2^31).
    CHECK(saturating_rounding_doubling_high_mul(kMin, kMin) == kMax);  // the only overflow
    CHECK(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29);
    CHECK(saturating_rounding_doubling_high_mul(3, 1 << 30) == 2);    // 1.5 -> 2
    CHECK(saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1);  // -1.5 -> -1 (ties up)
    CHECK(saturating_rounding_doubling_high_mul(5, 1 << 30) == 3);    // 2.5 -> 3
    CHECK(saturating_rounding_doubling_high_mul(-5, 1 << 30) == -2);  // -2.5 -> -2
    CHECK(saturating_rounding_doubling_high_mul(kMax, kMax) == kMax - 1);
    CHECK(saturating_rounding_doubling_high_mul(kMin, kMax) == -kMax);
    CHECK(saturating_rounding_doubling_high_mul(0, kMin) == 0);
    // RDBPOT: half away from zero.
    CHECK(rounding_divide_by_pot(3, 1) == 2);
    CHECK(rounding_divide_by_pot(-3, 1) == -2);
    CHECK(rounding_divide_by_pot(5, 2) == 1);    // 1.25
    CHECK(rounding_divide_by_pot(6, 2) == 2);    // 1.5
    CHECK(rounding_divide_by_pot(-6, 2) == -2);  // -1.5
    CHECK(rounding_divide_by_pot(-5, 2) == -1);  // -1.25
    CHECK(rounding_divide_by_pot(7, 0) == 7);
    CHECK(rounding_divide_by_pot(kMin, 31) == -1);
    CHECK(rounding_divide_by_pot(kMax, 31) == 1);
    CHECK(rounding_divide_by_pot(1 << 29, 31) == 0);  // 0.25
    // multiply_by_fixed_point: 0.75 = 3·2^29 · 2^-31 with shift 0; 0.1875 with shift 2.
    CHECK(multiply_by_fixed_point(100, {3 << 29, 0}) == 75);
    CHECK(multiply_by_fixed_point(-100, {3 << 29, 0}) == -75);
    CHECK(multiply_by_fixed_point(100, {3 << 29, 2}) == 19);    // 18.75
    CHECK(multiply_by_fixed_point(-100, {3 << 29, 2}) == -19);  // -18.75
    // 2 · 0.1875 = 0.375, but h = SRDHM(2, 0.75) = 1.5 -> 2, then 2 / 4 = 0.5 -> 1: double
    // rounding.
    CHECK(multiply_by_fixed_point(2, {3 << 29, 2}) == 1);
    CHECK(multiply_by_fixed_point(10, {1 << 30, -3}) == 40);         // 0.5 · 8
    CHECK(multiply_by_fixed_point(kMax, {1 << 30, -3}) == 1 << 30);  // saturated to kMax, then 0.5
    CHECK(multiply_by_fixed_point(kMin, {1 << 30, -31}) == -(1 << 30));
  }

  TEST_CASE("fixed point: equals a 128-bit evaluation of the formula on random inputs") {
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<std::int32_t> any(kMin, kMax);
    std::uniform_int_distribution<std::int32_t> mult(1 << 30, kMax);
    std::uniform_int_distribution<int> sh(-31, 31);
    const std::int32_t specials[] = {0, 1, -1, 2, -2, kMin, kMax, kMin + 1, 1 << 30, -(1 << 30)};
    int checked = 0;
    for (int i = 0; i < 400000; ++i) {
      std::int32_t x = any(rng);
      if (i % 7 == 0) x = specials[static_cast<std::size_t>(i / 7) % std::size(specials)];
      if (i % 11 == 0) x = static_cast<std::int32_t>(any(rng) % 4096);
      std::int32_t m = i % 13 == 0 ? any(rng) : mult(rng);
      if (i % 17 == 0) m = 1 << 30;  // ties: x·2^30 / 2^31 = x/2
      if (i % 19 == 0) m = kMin;
      const int s = i % 5 == 0 ? sh(rng) : sh(rng) / 4;
      const std::int32_t got = multiply_by_fixed_point(x, m, s);
      const std::int32_t want = exact_fixed_point(x, m, s);
      if (got != want) {
        CAPTURE(x);
        CAPTURE(m);
        CAPTURE(s);
        REQUIRE(got == want);
      }
      ++checked;
    }
    CHECK(checked == 400000);
  }

  TEST_CASE("fixed point: multiplier derivation reproduces the scale") {
    SUBCASE("exact values") {
      CHECK(fixed_point_from_scale(0.5) == FixedPointMultiplier{1 << 30, 0});
      CHECK(fixed_point_from_scale(0.25) == FixedPointMultiplier{1 << 30, 1});
      CHECK(fixed_point_from_scale(1.0) == FixedPointMultiplier{1 << 30, -1});
      CHECK(fixed_point_from_scale(0.75) == FixedPointMultiplier{3 << 29, 0});
      CHECK(fixed_point_from_scale(0.0) == FixedPointMultiplier{0, 0});
      // 1 − 2^-40 rounds up to 2^31, renormalized to 2^30 with the exponent raised.
      CHECK(fixed_point_from_scale(1.0 - std::ldexp(1.0, -40)) ==
            FixedPointMultiplier{1 << 30, -1});
    }
    SUBCASE("within half a unit of the multiplier's last place") {
      std::mt19937_64 rng(11);
      std::uniform_real_distribution<double> mant(0.5, 1.0);
      std::uniform_int_distribution<int> ex(-31, 30);
      for (int i = 0; i < 100000; ++i) {
        const double scale = std::ldexp(mant(rng), ex(rng));
        const FixedPointMultiplier fp = fixed_point_from_scale(scale);
        CAPTURE(scale);
        REQUIRE(fp.multiplier >= (1 << 30));
        REQUIRE(fp.shift >= -31);
        REQUIRE(fp.shift <= 31);
        const double ulp = std::ldexp(1.0, -31 - fp.shift);
        REQUIRE(std::fabs(fp.to_double() - scale) <= 0.5 * ulp);
        // Applied to an int32, the result is within one unit of the exact product (two roundings).
        const std::int32_t x = static_cast<std::int32_t>(rng() % 2000001) - 1000000;
        const double exact = static_cast<double>(x) * scale;
        if (std::fabs(exact) < 1e9) {
          const std::int32_t y = multiply_by_fixed_point(x, fp);
          REQUIRE(std::fabs(static_cast<double>(y) - exact) <= 1.0 + std::fabs(exact) * 1e-9);
        }
      }
    }
    SUBCASE("tiny scales keep shift 31 with a rounded multiplier") {
      for (double scale : {std::ldexp(1.0, -33), std::ldexp(0.7, -40), 1e-15}) {
        const FixedPointMultiplier fp = fixed_point_from_scale(scale);
        CHECK(fp.shift == 31);
        CHECK(std::fabs(fp.to_double() - scale) <= std::ldexp(0.5, -62));
      }
    }
    SUBCASE("invalid scales throw, naming the scale") {
      CHECK_THROWS_WITH_AS((void)fixed_point_from_scale(-1.0, "w_scale"),
                           doctest::Contains("w_scale"), vitc::ArgumentError);
      CHECK_THROWS_AS((void)fixed_point_from_scale(std::nan("")), vitc::ArgumentError);
      CHECK_THROWS_AS((void)fixed_point_from_scale(INFINITY), vitc::ArgumentError);
      CHECK_THROWS_AS((void)fixed_point_from_scale(std::ldexp(1.0, 31)), vitc::ArgumentError);
      CHECK_NOTHROW((void)fixed_point_from_scale(std::ldexp(0.99, 31)));
    }
  }
}
