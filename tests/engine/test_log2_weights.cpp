// SPDX-License-Identifier: Apache-2.0
// engine::detail::log2_weights: every Log2Prob code of every supported width against its weight
// 2^(levels − 1 − c), in place and not.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "vitcompress/engine/detail/int_vit_ops.hpp"

TEST_SUITE("engine") {
  TEST_CASE("log2 attention weights: 256·hi + lo = 2^(levels − 1 − c), 0 for the zero code") {
    for (std::int32_t levels : {2, 4, 8, 16}) {
      CAPTURE(levels);
      std::vector<std::uint8_t> codes;
      for (int rep = 0; rep < 3; ++rep)  // every code, several times, odd count
        for (std::int32_t c = 0; c <= levels; ++c) codes.push_back(static_cast<std::uint8_t>(c));
      const auto n = static_cast<vitc::Index>(codes.size());
      std::vector<std::uint8_t> hi(codes.size(), 0xEE), lo(codes.size(), 0xEE);
      vitc::engine::detail::log2_weights(codes.data(), n, levels, hi.data(), lo.data());
      std::vector<std::uint8_t> in_place = codes, hi2(codes.size(), 0xEE);
      vitc::engine::detail::log2_weights(in_place.data(), n, levels, hi2.data(), in_place.data());
      for (std::size_t i = 0; i < codes.size(); ++i) {
        const std::int32_t c = codes[i];
        const std::int32_t want = c < levels ? 1 << (levels - 1 - c) : 0;
        const std::int32_t high = levels > 8 ? hi[i] : 0;  // hi is written for 16 levels only
        CAPTURE(c);
        CHECK(256 * high + lo[i] == want);
        CHECK(lo[i] == in_place[i]);
        if (levels > 8) CHECK(hi2[i] == hi[i]);
        if (levels <= 8) CHECK(hi[i] == 0xEE);
      }
    }
  }
}
