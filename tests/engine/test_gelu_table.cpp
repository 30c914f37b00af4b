// SPDX-License-Identifier: Apache-2.0
// engine::detail::make_gelu_table: TableGelu's 16-bit scale and zero point, and its codes.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/engine/detail/gelu_table.hpp"

namespace gelu_table_test {

namespace ed = vitc::engine::detail;

// The output code of GELU(x) by the table's float formula.
int code_of(double x, double so, int zp) {
  const auto xf = static_cast<float>(x);
  const float g = 0.5f * xf * (1.0f + std::erf(xf * 0.70710678118654752440f));
  const float q = std::nearbyint(g / static_cast<float>(so)) + static_cast<float>(zp);
  return static_cast<int>(std::clamp(q, 0.0f, 255.0f));
}

}  // namespace gelu_table_test

TEST_SUITE("engine") {
  using namespace gelu_table_test;

  TEST_CASE("make_gelu_table: the 16-bit codes span where GELU's code changes, and no more") {
    // Output ranges from narrow to wide, zero points from the usual (GELU's minimum −0.17 at
    // code 0) to 0 and 255.
    for (const auto& [so, zp] : {std::pair{0.0007, 243}, std::pair{0.0045, 38}, std::pair{0.032, 5},
                                 std::pair{0.4, 0}, std::pair{0.01, 255}, std::pair{2.0, 10}}) {
      CAPTURE(so);
      CAPTURE(zp);
      const ed::GeluTable t = ed::make_gelu_table(so, zp);
      REQUIRE(t.codes.size() == 65536 + 4);
      auto at = [&](int c) { return t.codes[static_cast<std::size_t>(c + 32768)] + 128; };
      auto x_of = [&](int c) { return (c - t.zero_point) * t.scale; };
      // The ends: the zero point's code below, saturation above (unless the range is empty).
      CHECK(at(-32768) == zp);
      CHECK(at(32767) == 255);
      CHECK(x_of(-32768) < -0.75);
      CHECK(x_of(32767) >= (255 - zp) * so);
      // Every entry is the float formula at its real value (a sample of 4096 codes and both ends).
      bool same = true;
      for (int c = -32768; c < 32768; c += 16) same = same && at(c) == code_of(x_of(c), so, zp);
      CHECK(same);
      // Tight: a tenth of the range beyond either end would reach codes the table cannot tell
      // apart, so the span is within 10% of where the codes change.
      int first = 32767, last = -32768;
      for (int c = -32767; c < 32768; ++c)
        if (at(c) != at(c - 1)) {
          first = std::min(first, c);
          last = std::max(last, c);
        }
      CHECK(first - (-32768) < 6554);
      CHECK(32767 - last < 6554);
    }
  }

  TEST_CASE("make_gelu_table: the resolution is finer than the former symmetric scale") {
    // hi = 0.3, 2, 8 with GELU's minimum at code 0: at least 29, 100, 190 codes per output step.
    for (const auto& [hi, codes] :
         {std::pair{0.3, 29.0}, std::pair{2.0, 100.0}, std::pair{8.0, 190.0}}) {
      CAPTURE(hi);
      const double so = (hi + 0.17) / 255;
      const auto zp = static_cast<std::int32_t>(std::lround(0.17 / so));
      const ed::GeluTable t = ed::make_gelu_table(so, zp);
      CHECK(so / t.scale >= codes);
      CHECK(so / t.scale > so / (std::max(8.0, hi + so) / 32767));
    }
  }

  TEST_CASE("make_gelu_table: a bad scale or zero point is an ArgumentError") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (double so : {0.0, -0.1, nan, std::numeric_limits<double>::infinity()})
      CHECK_THROWS_AS((void)ed::make_gelu_table(so, 10), vitc::ArgumentError);
    CHECK_THROWS_AS((void)ed::make_gelu_table(0.01, -1), vitc::ArgumentError);
    CHECK_THROWS_AS((void)ed::make_gelu_table(0.01, 256), vitc::ArgumentError);
  }
}
