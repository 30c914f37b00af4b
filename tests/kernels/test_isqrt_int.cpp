// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>

#include "vitcompress/kernels/isqrt.hpp"

using vitc::kernels::isqrt;

namespace {

// I-ViT's integer square root (zkkli/I-ViT models/quantization_utils/quant_modules.py,
// IntLayerNorm.forward): 10 fixed Newton steps from k = 2^16. Kept only to show why it cannot be
// used; the library never calls it.
std::uint64_t ivit_fixed_newton_sqrt(std::uint64_t n) {
  std::uint64_t k = std::uint64_t{1} << 16;
  for (int i = 0; i < 10; ++i) k = (k + n / k) / 2;
  return k;
}

// floor(√n) by definition: the m with m² <= n < (m+1)², checked with 128-bit-safe arithmetic.
bool is_floor_sqrt(std::uint64_t n, std::uint64_t m) {
  if (m > 0xFFFFFFFFull) return false;
  const std::uint64_t sq = m * m;  // m < 2^32, fits
  if (sq > n) return false;
  const std::uint64_t next = m + 1;
  if (next > 0xFFFFFFFFull) return true;  // (m+1)² >= 2^64 > n
  return next * next > n;
}

}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("isqrt is exact for every n below 2^24 (32- and 64-bit)") {
    std::uint32_t root = 0;
    for (std::uint32_t n = 0; n < (1u << 24); ++n) {
      if ((root + 1) * (root + 1) <= n) ++root;
      if (isqrt(n) != root || isqrt(std::uint64_t{n}) != root) {
        CAPTURE(n);
        CAPTURE(root);
        CHECK(isqrt(n) == root);
        CHECK(isqrt(std::uint64_t{n}) == root);
        break;
      }
    }
    CHECK(root == 4095);
  }

  TEST_CASE("isqrt at m^2 - 1, m^2, m^2 + 1 across the 32-bit range") {
    int failures = 0;
    auto check = [&](std::uint32_t n, std::uint32_t expected) {
      if (isqrt(n) != expected && failures++ < 10) {
        CAPTURE(n);
        CHECK(isqrt(n) == expected);
      }
    };
    for (std::uint32_t m = 1; m <= 65535; ++m) {
      const std::uint32_t sq = m * m;
      check(sq - 1, m - 1);
      check(sq, m);
      check(sq + 1, m);  // m <= 65535 -> m² + 1 < 2^32
    }
    check(std::numeric_limits<std::uint32_t>::max(), 65535);
    CHECK(failures == 0);
  }

  TEST_CASE("isqrt at m^2 - 1, m^2, m^2 + 1 across the 64-bit range") {
    int failures = 0;
    auto check = [&](std::uint64_t n, std::uint64_t expected) {
      if (isqrt(n) != expected && failures++ < 10) {
        CAPTURE(n);
        CHECK(isqrt(n) == expected);
      }
    };
    auto around = [&](std::uint64_t m) {
      const std::uint64_t sq = m * m;
      check(sq - 1, m - 1);
      check(sq, m);
      if (sq != std::numeric_limits<std::uint64_t>::max()) check(sq + 1, m);
    };
    // Every power of two and its neighbours, then random roots up to 2^32 - 1.
    for (int b = 1; b <= 32; ++b) {
      const std::uint64_t p = std::uint64_t{1} << b;
      around(p - 1);
      if (b < 32) around(p);
      if (b < 32) around(p + 1);
    }
    std::mt19937_64 rng(20261123);
    for (int i = 0; i < 200000; ++i) around(1 + rng() % 0xFFFFFFFFull);
    for (std::uint64_t m = 0xFFFFFFFFull - 1000; m <= 0xFFFFFFFFull; ++m) around(m);
    // The top of the range: floor(√(2^64 − 1)) = 2^32 − 1.
    check(std::numeric_limits<std::uint64_t>::max(), 0xFFFFFFFFull);
    check(std::numeric_limits<std::uint64_t>::max() - 1, 0xFFFFFFFFull);
    CHECK(failures == 0);
    // Random n anywhere in the range, checked against the definition.
    for (int i = 0; i < 200000; ++i) {
      const std::uint64_t n = rng() >> (rng() % 64);
      if (!is_floor_sqrt(n, isqrt(n)) && failures++ < 10) {
        CAPTURE(n);
        CHECK(is_floor_sqrt(n, isqrt(n)));
      }
    }
    CHECK(failures == 0);
  }

  TEST_CASE("isqrt is usable in constant expressions") {
    static_assert(isqrt(0u) == 0 && isqrt(1u) == 1 && isqrt(3u) == 1 && isqrt(4u) == 2);
    static_assert(isqrt(std::uint64_t{99}) == 9 && isqrt(std::uint64_t{100}) == 10);
    static_assert(isqrt(std::numeric_limits<std::uint64_t>::max()) == 0xFFFFFFFFull);
    CHECK(isqrt(std::uint8_t{255}) == 15);
    CHECK(isqrt(std::uint16_t{65535}) == 255);
  }

  TEST_CASE("I-ViT's fixed 10-step Newton from 2^16 is wrong where isqrt is right") {
    // Small inputs: ten steps cannot come down from 2^16.
    CHECK(ivit_fixed_newton_sqrt(100) == 64);
    CHECK(isqrt(std::uint64_t{100}) == 10);
    CHECK(ivit_fixed_newton_sqrt(10000) == 108);
    CHECK(isqrt(std::uint64_t{10000}) == 100);
    // At m² − 1 it stops one above the floor.
    const std::uint64_t n = (std::uint64_t{1} << 22) - 1;
    CHECK(ivit_fixed_newton_sqrt(n) == 2048);
    CHECK(isqrt(n) == 2047);
    // Count its failures below 2^20: many; isqrt has none (first test case).
    int wrong = 0;
    for (std::uint64_t v = 0; v < (1u << 20); ++v) wrong += ivit_fixed_newton_sqrt(v) != isqrt(v);
    CHECK(wrong > 1000);
  }
}
