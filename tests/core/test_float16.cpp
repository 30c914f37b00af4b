// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "vitcompress/core/float16.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VITC_TEST_HAVE_X86 1
#endif

namespace {

bool is_half_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
bool is_bf16_nan(std::uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0; }

// Independent oracle for float -> 16 bits: among the two representable neighbours of x (found by
// searching the monotone map bits -> float), pick the nearer one in double arithmetic, ties to the
// even pattern. Works for any finite x; `decode` is the exact 16-bit -> float conversion, which is
// itself checked against its definition below.
template <class Decode>
std::uint16_t nearest_even_reference(float x, Decode decode, std::uint16_t max_finite,
                                     std::uint16_t inf_bits) {
  const double v = std::fabs(static_cast<double>(x));
  const std::uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  // Largest pattern whose value <= v (patterns 0..max_finite are increasing in value).
  std::uint32_t lo = 0, hi = max_finite;
  if (v >= decode(max_finite)) {
    lo = max_finite;
  } else {
    while (hi - lo > 1) {
      const std::uint32_t mid = (lo + hi) / 2;
      if (static_cast<double>(decode(static_cast<std::uint16_t>(mid))) <= v)
        lo = mid;
      else
        hi = mid;
    }
  }
  const double below = decode(static_cast<std::uint16_t>(lo));
  if (below == v) return static_cast<std::uint16_t>(sign | lo);
  // The value one step above the largest finite is 2^(emax+1); overflow is decided against it.
  const double above = lo == max_finite
                           ? 2.0 * std::ldexp(1.0, std::ilogb(below))
                           : static_cast<double>(decode(static_cast<std::uint16_t>(lo + 1)));
  const std::uint32_t up = lo == max_finite ? inf_bits : lo + 1;
  const double d_lo = v - below, d_hi = above - v;
  if (d_lo < d_hi) return static_cast<std::uint16_t>(sign | lo);
  if (d_hi < d_lo) return static_cast<std::uint16_t>(sign | up);
  return static_cast<std::uint16_t>(sign | ((lo & 1u) ? up : lo));
}

#ifdef VITC_TEST_HAVE_X86
__attribute__((target("f16c"))) std::uint16_t f16c_float_to_half(float x) {
  return static_cast<std::uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0));
}
__attribute__((target("f16c"))) float f16c_half_to_float(std::uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
bool have_f16c() { return __builtin_cpu_supports("f16c"); }
#endif

}  // namespace

TEST_SUITE("core") {
  TEST_CASE("half_bits_to_float follows the binary16 definition on all 65536 patterns") {
    for (std::uint32_t h = 0; h < 65536; ++h) {
      CAPTURE(h);
      const float f = vitc::half_bits_to_float(static_cast<std::uint16_t>(h));
      const bool negative = (h & 0x8000u) != 0;
      const int exp = static_cast<int>((h >> 10) & 0x1fu);
      const int mant = static_cast<int>(h & 0x3ffu);
      REQUIRE(std::signbit(f) == negative);
      if (exp == 31 && mant == 0) {
        REQUIRE(std::isinf(f));
      } else if (exp == 31) {
        REQUIRE(std::isnan(f));
        // The payload is kept bit for bit.
        REQUIRE(((std::bit_cast<std::uint32_t>(f) >> 13) & 0x3ffu) ==
                static_cast<std::uint32_t>(mant));
      } else {
        const double expected =
            exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
        REQUIRE(std::fabs(static_cast<double>(f)) == expected);
      }
    }
  }

  TEST_CASE("half -> float -> half is the identity except that signalling NaNs become quiet") {
    int nans = 0;
    for (std::uint32_t h = 0; h < 65536; ++h) {
      CAPTURE(h);
      const auto bits = static_cast<std::uint16_t>(h);
      const std::uint16_t back = vitc::float_to_half_bits(vitc::half_bits_to_float(bits));
      if (is_half_nan(bits)) {
        ++nans;
        REQUIRE(back == (bits | 0x0200u));
      } else {
        REQUIRE(back == bits);
      }
    }
    CHECK(nans == 2 * 1023);
  }

  TEST_CASE("float_to_half_bits rounds to nearest even at the edges") {
    using vitc::float_to_half_bits;
    CHECK(float_to_half_bits(0.0f) == 0x0000u);
    CHECK(float_to_half_bits(-0.0f) == 0x8000u);
    CHECK(float_to_half_bits(1.0f) == 0x3c00u);
    CHECK(float_to_half_bits(-2.0f) == 0xc000u);
    CHECK(float_to_half_bits(65504.0f) == 0x7bffu);
    CHECK(float_to_half_bits(65519.996f) == 0x7bffu);  // just below the tie
    CHECK(float_to_half_bits(65520.0f) == 0x7c00u);    // tie: 65504 is odd, goes to inf
    CHECK(float_to_half_bits(-1e9f) == 0xfc00u);
    CHECK(float_to_half_bits(std::numeric_limits<float>::infinity()) == 0x7c00u);
    CHECK(float_to_half_bits(std::ldexp(1.0f, -14)) == 0x0400u);  // smallest normal
    CHECK(float_to_half_bits(std::ldexp(1.0f, -24)) == 0x0001u);  // smallest subnormal
    CHECK(float_to_half_bits(std::ldexp(1.0f, -25)) == 0x0000u);  // tie with 0: even
    CHECK(float_to_half_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001u);
    CHECK(float_to_half_bits(-std::ldexp(1.0f, -26)) == 0x8000u);
    CHECK(float_to_half_bits(std::ldexp(3.0f, -25)) == 0x0002u);         // 1.5 ulp: tie, to even 2
    CHECK(float_to_half_bits(std::ldexp(5.0f, -25)) == 0x0002u);         // 2.5 ulp: tie, to even 2
    CHECK(float_to_half_bits(std::ldexp(1023.5f, -24)) == 0x0400u);      // rounds up into normals
    CHECK(float_to_half_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00u);  // tie, 1.0 is even
    CHECK(float_to_half_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02u);  // tie, to even
    CHECK(float_to_half_bits(std::numeric_limits<float>::denorm_min()) == 0x0000u);
    // NaN stays NaN: sign and top payload kept, quiet bit set, even if the payload is only in
    // the dropped low bits.
    CHECK(float_to_half_bits(std::bit_cast<float>(0x7fc00000u)) == 0x7e00u);
    CHECK(float_to_half_bits(std::bit_cast<float>(0xff800001u)) == 0xfe00u);
    CHECK(float_to_half_bits(std::bit_cast<float>(0x7fa02000u)) == 0x7f01u);
  }

  TEST_CASE("float_to_half_bits matches an independent nearest-even oracle") {
    std::mt19937 rng(12345);
    std::uniform_real_distribution<float> in_range(-70000.0f, 70000.0f);
    for (int i = 0; i < 200000; ++i) {
      // Half of the samples span every float exponent, half the half-precision range.
      float x = i % 2 ? std::bit_cast<float>(static_cast<std::uint32_t>(rng())) : in_range(rng);
      if (std::isnan(x)) continue;
      CAPTURE(x);
      if (std::isinf(x)) {
        CHECK(vitc::float_to_half_bits(x) == (std::signbit(x) ? 0xfc00u : 0x7c00u));
        continue;
      }
      REQUIRE(vitc::float_to_half_bits(x) ==
              nearest_even_reference(x, vitc::half_bits_to_float, 0x7bffu, 0x7c00u));
    }
  }

  TEST_CASE("float_to_half_bits matches the F16C instruction bit for bit") {
#ifdef VITC_TEST_HAVE_X86
    if (!have_f16c()) {
      MESSAGE("the CPU has no F16C: comparison skipped");
      return;
    }
    // Edge cases: every half boundary and midpoint, plus their float neighbours.
    for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
      const float v = vitc::half_bits_to_float(static_cast<std::uint16_t>(h));
      const float next = vitc::half_bits_to_float(static_cast<std::uint16_t>(h + 1));
      const float mid = static_cast<float>((static_cast<double>(v) + next) / 2);
      for (float x : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
        for (float s : {x, -x}) {
          CAPTURE(s);
          REQUIRE(vitc::float_to_half_bits(s) == f16c_float_to_half(s));
        }
      }
    }
    // 16-bit -> float agrees too, except that the instruction quiets signalling NaNs.
    for (std::uint32_t h = 0; h < 65536; ++h) {
      const auto bits = static_cast<std::uint16_t>(h);
      const float ours = vitc::half_bits_to_float(bits);
      const float theirs = f16c_half_to_float(bits);
      CAPTURE(h);
      if (is_half_nan(bits))
        REQUIRE((std::bit_cast<std::uint32_t>(ours) | 0x00400000u) ==
                std::bit_cast<std::uint32_t>(theirs));
      else
        REQUIRE(std::bit_cast<std::uint32_t>(ours) == std::bit_cast<std::uint32_t>(theirs));
    }
    // 10 million random bit patterns (every exponent, NaNs and infinities included) and floats
    // in the half range.
    std::mt19937 rng(20240601);
    std::uniform_real_distribution<float> in_range(-66000.0f, 66000.0f);
    std::uint64_t mismatches = 0;
    std::uint32_t first_bad = 0;
    for (int i = 0; i < 10'000'000; ++i) {
      const float x =
          i % 2 ? std::bit_cast<float>(static_cast<std::uint32_t>(rng())) : in_range(rng);
      if (vitc::float_to_half_bits(x) != f16c_float_to_half(x)) {
        if (mismatches++ == 0) first_bad = std::bit_cast<std::uint32_t>(x);
      }
    }
    CAPTURE(first_bad);
    CHECK(mismatches == 0);
#else
    MESSAGE("not an x86 target: F16C comparison skipped");
#endif
  }

  TEST_CASE("bfloat16 conversion is exact one way and rounds to nearest even the other") {
    using vitc::bf16_bits_to_float;
    using vitc::float_to_bf16_bits;
    for (std::uint32_t h = 0; h < 65536; ++h) {
      const auto bits = static_cast<std::uint16_t>(h);
      CAPTURE(h);
      const float f = bf16_bits_to_float(bits);
      REQUIRE(std::bit_cast<std::uint32_t>(f) == h << 16);
      const std::uint16_t back = float_to_bf16_bits(f);
      if (is_bf16_nan(bits))
        REQUIRE(back == (bits | 0x0040u));
      else
        REQUIRE(back == bits);
    }
    CHECK(float_to_bf16_bits(1.0f) == 0x3f80u);
    CHECK(float_to_bf16_bits(std::bit_cast<float>(0x3f808000u)) == 0x3f80u);  // tie, even
    CHECK(float_to_bf16_bits(std::bit_cast<float>(0x3f818000u)) == 0x3f82u);  // tie, even
    CHECK(float_to_bf16_bits(std::bit_cast<float>(0x3f808001u)) == 0x3f81u);
    CHECK(float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80u);  // rounds to inf
    CHECK(float_to_bf16_bits(-std::numeric_limits<float>::infinity()) == 0xff80u);
    CHECK(float_to_bf16_bits(std::bit_cast<float>(0x7f800001u)) == 0x7fc0u);  // NaN kept
    CHECK(float_to_bf16_bits(std::bit_cast<float>(0xffffffffu)) == 0xffffu);
    CHECK(float_to_bf16_bits(-0.0f) == 0x8000u);

    std::mt19937 rng(777);
    for (int i = 0; i < 200000; ++i) {
      const float x = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
      if (std::isnan(x) || std::isinf(x)) continue;
      CAPTURE(x);
      REQUIRE(float_to_bf16_bits(x) ==
              nearest_even_reference(x, bf16_bits_to_float, 0x7f7fu, 0x7f80u));
    }
  }

  TEST_CASE("the conversions are usable in constant expressions") {
    static_assert(vitc::float_to_half_bits(1.5f) == 0x3e00u);
    static_assert(vitc::half_bits_to_float(0x3e00u) == 1.5f);
    static_assert(vitc::float_to_bf16_bits(1.5f) == 0x3fc0u);
    static_assert(vitc::bf16_bits_to_float(0x3fc0u) == 1.5f);
  }
}
