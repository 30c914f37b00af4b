// SPDX-License-Identifier: Apache-2.0
// quant/requantize.hpp: fixed-point requantization parameters from float scales.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quant_test_util.hpp"
#include "vitcompress/kernels/fixed_point.hpp"
#include "vitcompress/quant/quantizer.hpp"
#include "vitcompress/quant/requantize.hpp"

TEST_SUITE("quant") {
  TEST_CASE("requantization multipliers reproduce the float scale to within 1 ulp") {
    std::mt19937_64 rng(12);
    std::uniform_real_distribution<double> log_u(-12.0, 2.0);
    for (int trial = 0; trial < 200; ++trial) {
      const auto sx = static_cast<float>(std::exp2(log_u(rng)));
      const auto sy = static_cast<float>(std::exp2(log_u(rng)));
      std::vector<float> sw(16);
      for (float& s : sw) s = static_cast<float>(std::exp2(log_u(rng) - 4));
      const auto rp = vitc::quant::make_requant_params(sx, sw, {}, sy, 3, sw.size(), "layer");
      REQUIRE(rp.multipliers.size() == sw.size());
      CHECK(rp.output_zero_point == 3);
      for (std::size_t n = 0; n < sw.size(); ++n) {
        const double ratio = static_cast<double>(sx) * sw[n] / sy;
        const auto m = rp.multipliers[n];
        CAPTURE(ratio);
        if (ratio < std::ldexp(1.0, -32)) continue;  // below the format's full precision
        REQUIRE(m.multiplier >= (1 << 30));
        const double ulp = std::ldexp(1.0, -31 - m.shift);  // one unit of the multiplier
        CHECK(std::abs(m.to_double() - ratio) <= ulp);
        CHECK(std::abs(m.to_double() - ratio) <= 0.5 * ulp);  // in fact half a unit
      }
    }
  }

  TEST_CASE("integer pipeline matches the float layer to one output step") {
    using namespace vitc;
    std::mt19937_64 rng(5);
    const Index m = 9, k = 40, n = 12;
    const auto x = test::uniform_tensor(m, k, -0.5f, 1.5f, 1);
    const auto w = test::uniform_tensor(n, k, -0.2f, 0.2f, 2);
    const auto b = test::uniform_tensor(1, n, -0.3f, 0.3f, 3);
    const quant::Quantizer<quant::Asymmetric<8>, quant::PerTensor> qa;
    const quant::Quantizer<quant::Symmetric<8>, quant::PerChannel> qw(quant::PerChannel{0});
    const auto px = qa.calibrate(x.cview(), "x");
    const auto pw = qw.calibrate(w.cview(), "w");
    const auto cx = quant::quantize<std::uint8_t>(x.cview(), px, "x");
    const auto cw = quant::quantize<std::int8_t>(w.cview(), pw, "w");
    // The float layer on the dequantized operands, and its output quantization.
    const auto xd = quant::dequantize<std::uint8_t>(cx.cview(), px, "x");
    const auto wd = quant::dequantize<std::int8_t>(cw.cview(), pw, "w");
    Tensor<float, 2> y({m, n});
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) {
        double acc = b(0, j);
        for (Index kk = 0; kk < k; ++kk) acc += static_cast<double>(xd(i, kk)) * wd(j, kk);
        y(i, j) = static_cast<float>(acc);
      }
    const auto py = qa.calibrate(y.cview(), "y");
    const auto rp = quant::make_requant_params(
        px.scales[0], pw.scales, std::span<const float>(b.data(), static_cast<std::size_t>(n)),
        py.scales[0], py.zero_points[0], static_cast<std::size_t>(n), "layer");
    int max_diff = 0;
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) {
        std::int32_t acc = 0;
        for (Index kk = 0; kk < k; ++kk)
          acc += (static_cast<std::int32_t>(cx(i, kk)) - px.zero_points[0]) * cw(j, kk);
        const std::int32_t q =
            rp.output_zero_point +
            kernels::multiply_by_fixed_point(acc + rp.bias[static_cast<std::size_t>(j)],
                                             rp.multipliers[static_cast<std::size_t>(j)]);
        const auto ref = quant::quantize_value(y(i, j), py.group(0), py.scheme);
        max_diff = std::max(max_diff, std::abs(std::clamp(q, 0, 255) - ref));
      }
    CHECK(max_diff <= 1);
  }

  TEST_CASE("requantization argument errors name the layer") {
    const std::vector<float> sw{0.1f, 0.2f};
    const std::vector<float> huge_bias{1e9f, 0.0f};
    vitc::test::check_throws_containing<vitc::ArgumentError>(
        [&] { (void)vitc::quant::make_requant_params(1e-3f, sw, huge_bias, 0.1f, 0, 2, "fc1"); },
        "fc1");
    CHECK_THROWS_AS((void)vitc::quant::make_requant_params(0.0f, sw, {}, 0.1f, 0, 2, "p"),
                    vitc::ArgumentError);
    CHECK_THROWS_AS((void)vitc::quant::make_requant_params(0.1f, sw, {}, 0.1f, 0, 3, "p"),
                    vitc::ArgumentError);
    CHECK_THROWS_AS((void)vitc::quant::make_requant_params(1e4f, sw, {}, 1e-9f, 0, 2, "p"),
                    vitc::ArgumentError);  // ratio >= 2^31
  }
}
