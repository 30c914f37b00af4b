// SPDX-License-Identifier: Apache-2.0
#pragma once
// Shared by the quant tests: seeded random tensors and an exception-message check.

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::test {

// Uniform values in [lo, hi), reproducible from `seed` (own draw, independent of the library).
inline Tensor<float, 2> uniform_tensor(Index rows, Index cols, float lo, float hi,
                                       std::uint64_t seed) {
  Tensor<float, 2> t({rows, cols});
  std::mt19937_64 rng(seed);
  for (float& v : t.span())
    v = lo + (hi - lo) * static_cast<float>(static_cast<double>(rng() >> 11) * 0x1p-53);
  return t;
}

// Runs f, expects an exception of type E whose message contains `needle`.
template <class E, class F>
void check_throws_containing(F&& f, const std::string& needle) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
  }
  CHECK_MESSAGE(thrown, "expected an exception mentioning '" << needle << "'");
}

}  // namespace vitc::test
