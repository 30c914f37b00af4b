// SPDX-License-Identifier: Apache-2.0
// The engine's input quantization paths (engine::detail::quantize_u8_avx2 / _avx512) against the
// asymmetric 8-bit scheme they implement: every width up to 40 (vector blocks and tails), ties,
// values far outside the range, and no write past n.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "vitcompress/engine/detail/int_vit_ops.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/quant/scheme.hpp"

namespace quantize_input_test {

using vitc::Index;

std::uint8_t reference(float x, float scale, std::int32_t zero_point) {
  return static_cast<std::uint8_t>(
      vitc::quant::detail::SchemeImpl<vitc::quant::SchemeKind::kAsymmetric>::quantize(
          x, vitc::quant::QuantParams{scale, zero_point}, 8));
}

// Inputs: random values across the range and beyond, exact ties k + 0.5 (scale 0.5 makes x / s
// exact), and huge values.
std::vector<float> inputs(float scale, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-200.0f * scale, 200.0f * scale);
  std::vector<float> v(64);
  for (std::size_t i = 0; i < v.size(); ++i) {
    switch (i % 4) {
      case 0:
        v[i] = u(rng);
        break;
      case 1:
        v[i] = scale * (static_cast<float>(static_cast<int>(rng() % 301) - 150) + 0.5f);
        break;
      case 2:
        v[i] = (rng() % 2 ? 1e30f : -1e30f);
        break;
      default:
        v[i] = scale * static_cast<float>(static_cast<int>(rng() % 301) - 150);
        break;
    }
  }
  return v;
}

template <class Fn>
void check_path(Fn quantize) {
  for (float scale : {0.5f, 0.0173f, 3.0f})
    for (std::int32_t zp : {0, 17, 128, 255})
      for (Index n = 0; n <= 40; ++n) {
        CAPTURE(scale);
        CAPTURE(zp);
        CAPTURE(n);
        const std::vector<float> x = inputs(scale, static_cast<std::uint32_t>(n * 1000 + zp));
        std::vector<std::uint8_t> got(static_cast<std::size_t>(n) + 8, 0xA5);
        quantize(x.data(), scale, zp, got.data(), n);
        bool same = true;
        for (Index j = 0; j < n; ++j)
          same = same && got[static_cast<std::size_t>(j)] ==
                             reference(x[static_cast<std::size_t>(j)], scale, zp);
        CHECK(same);
        for (std::size_t j = static_cast<std::size_t>(n); j < got.size(); ++j)
          CHECK(got[j] == 0xA5);
      }
}

}  // namespace quantize_input_test

TEST_SUITE("engine") {
  TEST_CASE("input quantization: the SIMD paths equal the asymmetric 8-bit scheme") {
    using namespace quantize_input_test;
#if VITC_HAVE_X86_TARGET_KERNELS
    if (vitc::kernels::arch::Avx2::available())
      check_path(vitc::engine::detail::quantize_u8_avx2);
    else
      MESSAGE("AVX2 not available on this CPU: skipped");
    if (vitc::kernels::arch::Avx512Vnni::available())
      check_path(vitc::engine::detail::quantize_u8_avx512);
    else
      MESSAGE("AVX-512 not available on this CPU: skipped");
#else
    MESSAGE("no x86 SIMD paths on this target");
#endif
  }
}
