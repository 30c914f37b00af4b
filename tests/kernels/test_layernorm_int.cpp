// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "nonlinear_test_util.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/kernels/layernorm_int.hpp"

using vitc::Index;
using vitc::kernels::layernorm_int;
using vitc::kernels::LayerNormParams;
using vitc::kernels::prepare_layernorm;
namespace arch = vitc::kernels::arch;
namespace detail = vitc::kernels::detail;
using vitc_test::Strided;

namespace {

struct Affine {
  std::vector<float> gamma, beta;
  std::vector<std::uint8_t> ptf;
};

Affine random_affine(std::mt19937& rng, Index c, bool ptf) {
  Affine a;
  std::normal_distribution<float> g(1.0f, 0.3f), b(0.0f, 0.2f);
  for (Index i = 0; i < c; ++i) {
    a.gamma.push_back(g(rng));
    a.beta.push_back(b(rng));
    a.ptf.push_back(ptf ? static_cast<std::uint8_t>(rng() % 4) : 0);
  }
  return a;
}

// float64 LayerNorm of one row, in output units (before rounding).
template <class In>
std::vector<double> reference_row(const In* x, const Affine& a, double s, double so, double eps) {
  const std::size_t c = a.gamma.size();
  std::vector<double> v(c), out(c);
  double mean = 0;
  for (std::size_t i = 0; i < c; ++i) mean += v[i] = double(x[i]) * std::ldexp(s, a.ptf[i]);
  mean /= double(c);
  double var = 0;
  for (std::size_t i = 0; i < c; ++i) var += (v[i] - mean) * (v[i] - mean);
  var /= double(c);
  const double inv = 1.0 / std::sqrt(var + eps);
  for (std::size_t i = 0; i < c; ++i) out[i] = (a.gamma[i] * (v[i] - mean) * inv + a.beta[i]) / so;
  return out;
}

template <class In>
In random_value(std::mt19937& rng, double sigma) {
  const double lo = std::numeric_limits<In>::min(), hi = std::numeric_limits<In>::max();
  return static_cast<In>(
      std::clamp(std::round(std::normal_distribution<double>(0, sigma)(rng)), lo, hi));
}

}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("prepare_layernorm validates its arguments and names them") {
    std::vector<float> g(8, 1.0f), b(8, 0.0f), b7(7, 0.0f);
    std::vector<std::uint8_t> ptf(8, 1), ptf_bad(8, 4), ptf7(7, 0);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b7, 0.1f, 0.1f), doctest::Contains("beta"),
                         vitc::ShapeError);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b, 0.1f, 0.1f, 1e-6f, ptf7),
                         doctest::Contains("ptf_shift"), vitc::ShapeError);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b, 0.1f, 0.1f, 1e-6f, ptf_bad),
                         doctest::Contains("ptf_shift[0]"), vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b, 0.0f, 0.1f),
                         doctest::Contains("input_scale"), vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b, 0.1f, -2.0f),
                         doctest::Contains("output_scale"), vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b, 0.1f, 0.1f, -1.0f), doctest::Contains("eps"),
                         vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(g, b, 0.1f, 1e-6f),
                         doctest::Contains("output_scale"), vitc::ArgumentError);
    std::vector<float> gnan = g;
    gnan[3] = std::nanf("");
    CHECK_THROWS_WITH_AS((void)prepare_layernorm(gnan, b, 0.1f, 0.1f),
                         doctest::Contains("gamma[3]"), vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_layernorm(std::vector<float>{}, std::vector<float>{}, 0.1f, 0.1f),
                    vitc::ArgumentError);
    const LayerNormParams p = prepare_layernorm(g, b, 0.1f, 0.05f, 1e-6f, ptf);
    CHECK(p.channels == 8);
    CHECK(p.ptf_scale[0] == 2);
  }

  TEST_CASE("LayerNorm accuracy against float64 (the bound stated in layernorm_int.hpp)") {
    std::mt19937 rng(31);
    double worst = 0;
    int compared = 0;
    auto run = [&](auto sample, Index c, bool ptf, double sigma, bool outliers, double s) {
      using In = decltype(sample);
      const Affine a = random_affine(rng, c, ptf);
      const double so = 4.0 / 127;  // |normalized·γ + β| stays below 4 (no saturation) mostly
      const double eps = 1e-6;
      const LayerNormParams p =
          prepare_layernorm(a.gamma, a.beta, static_cast<float>(s), static_cast<float>(so),
                            static_cast<float>(eps), a.ptf);
      const double sf = static_cast<float>(s), sof = static_cast<float>(so);
      for (int rep = 0; rep < 4; ++rep) {
        std::vector<In> x(static_cast<std::size_t>(c));
        for (Index i = 0; i < c; ++i) {
          x[static_cast<std::size_t>(i)] =
              random_value<In>(rng, sigma / (1 << a.ptf[static_cast<std::size_t>(i)]));
          if (outliers && i % 37 == 5)
            x[static_cast<std::size_t>(i)] = random_value<In>(rng, 20 * sigma);
        }
        std::vector<std::int8_t> y(static_cast<std::size_t>(c));
        detail::layernorm_row_scalar(p, x.data(), y.data());
        const auto ref = reference_row(x.data(), a, sf, sof, eps);
        for (Index i = 0; i < c; ++i) {
          const double r = ref[static_cast<std::size_t>(i)];
          if (r < -127.5 || r > 126.5) continue;  // saturated either way
          ++compared;
          const double e = std::abs(y[static_cast<std::size_t>(i)] - r);
          worst = std::max(worst, e);
        }
      }
    };
    for (Index c : {2, 17, 192, 384, 768, 4096}) {
      run(std::int8_t{}, c, false, 30.0, false, 0.05);
      run(std::int8_t{}, c, true, 100.0, false, 0.05);
      run(std::int8_t{}, c, true, 20.0, true, 0.05);
      run(std::int16_t{}, c, false, 3000.0, true, 1e-3);
      run(std::int16_t{}, c, true, 30.0, false, 1e-3);
      run(std::int32_t{}, c, false, 1e5, true, 1e-5);
      run(std::int32_t{}, c, true, 1e8, true, 1e-8);  // rows with |x·2^α| >= 2^24: ρ > 0
      run(std::int32_t{}, c, false, 5.0, false, 0.1);
    }
    MESSAGE("LayerNorm max error " << worst << " output LSB over " << compared << " outputs");
    CHECK(compared > 100000);
    CHECK(worst <= 1.1);
  }

  TEST_CASE("constant rows give beta, and the extremes of every input type do not overflow") {
    std::mt19937 rng(4);
    const Affine a = random_affine(rng, 768, true);
    const double so = 0.05;
    const LayerNormParams p =
        prepare_layernorm(a.gamma, a.beta, 0.01f, static_cast<float>(so), 1e-6f, a.ptf);
    std::vector<std::int32_t> x(768, 12345);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = 12345 >> a.ptf[i] << a.ptf[i] >> a.ptf[i];
    std::vector<std::int8_t> y(768);
    // Equal real values in every channel: zero spread, output = round(beta / S_out).
    std::vector<std::int16_t> flat(768);
    for (std::size_t i = 0; i < flat.size(); ++i)
      flat[i] = static_cast<std::int16_t>(64 >> a.ptf[i]);
    detail::layernorm_row_scalar(p, flat.data(), y.data());
    // β is rounded to 2^−f of an output step first, so the output is within half a step of
    // β/S_out plus 2^−(f+1).
    const double tol = 0.5 + std::ldexp(1.0, -(p.frac_bits + 1)) + 1e-9;
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(std::abs(y[i] - a.beta[i] / so) <= tol);
    // Alternating extremes: normalized values ±1 (up to the PTF factors), no overflow anywhere.
    const LayerNormParams flat_p =
        prepare_layernorm(a.gamma, a.beta, 0.01f, static_cast<float>(so));
    for (std::int32_t lo : {std::numeric_limits<std::int32_t>::min(), -32768, -128}) {
      const std::int32_t hi = -(lo + 1);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 2 ? hi : lo;
      detail::layernorm_row_scalar(flat_p, x.data(), y.data());
      for (std::size_t i = 0; i < y.size(); ++i) {
        const double want = ((i % 2 ? 1.0 : -1.0) * a.gamma[i] + a.beta[i]) / so;
        CHECK(std::abs(y[i] - std::clamp(want, -128.0, 127.0)) <= 1.0);
      }
    }
  }

  TEST_CASE_TEMPLATE("every LayerNorm SIMD path equals the scalar reference bit for bit", Arch,
                     VITC_KERNEL_ARCH_TAGS) {
    if (!vitc_test::arch_runs<Arch>()) return;
    std::mt19937 rng(123);
    auto check_all = [&](auto sample, Index c, bool ptf) {
      using In = decltype(sample);
      const Affine a = random_affine(rng, c, ptf);
      for (float so : {0.03f, 0.3f}) {
        const LayerNormParams p = prepare_layernorm(a.gamma, a.beta, 0.02f, so, 1e-6f, a.ptf);
        // Rows cross the SIMD paths' blocks of 8 (statistics first, then normalization).
        const Index rows = c > 1000 ? 3 : (c <= 64 ? 19 : 11);
        for (int mode = 0; mode < 10; ++mode) {
          Strided<In> x(rows, c, 3, 1);
          for (Index r = 0; r < rows; ++r) {
            for (Index i = 0; i < c; ++i) {
              In v{};
              switch (mode) {
                case 0:
                  v = static_cast<In>(rng());
                  break;
                case 1:
                  v = std::numeric_limits<In>::min();
                  break;
                case 2:
                  v = std::numeric_limits<In>::max();
                  break;
                case 3:
                  v = (rng() & 1) ? std::numeric_limits<In>::max() : std::numeric_limits<In>::min();
                  break;
                case 4:
                  v = random_value<In>(rng, 20.0);
                  break;
                case 5:
                  v = static_cast<In>(i % 5 == 0 ? std::numeric_limits<In>::max() / 2
                                                 : static_cast<In>(rng() % 7));
                  break;
                case 6:
                  v = static_cast<In>(static_cast<std::int32_t>(rng()) >> (rng() % 32));
                  break;
                case 7:  // the engine's residual stream: 8-bit codes minus their zero point
                  v = static_cast<In>(std::clamp<std::int32_t>(
                      static_cast<std::int32_t>(rng() % 511) - 255, std::numeric_limits<In>::min(),
                      std::numeric_limits<In>::max()));
                  break;
                case 8:  // a large mean and a spread of a few steps
                  v = static_cast<In>(std::numeric_limits<In>::max() / 2 + rng() % 3);
                  break;
                default: {  // |x·2^α| just below 2^14, and in odd rows 2^14 at the last channel
                  const int alpha = a.ptf[static_cast<std::size_t>(i)];
                  const std::int32_t big = (r % 2 == 1 && i == c - 1) ? -16384
                                           : (rng() % 2 == 0)         ? -16383
                                                                      : 16383;
                  v = static_cast<In>(std::clamp<std::int32_t>(big / (1 << alpha),
                                                               std::numeric_limits<In>::min(),
                                                               std::numeric_limits<In>::max()));
                  break;
                }
              }
              x.row(r)[i] = v;
            }
          }
          Strided<std::int8_t> ref(rows, c, 5, 3, 0x33), got(rows, c, 5, 3, 0x33);
          layernorm_int<arch::Scalar>(p, x.cview(), ref.view());
          layernorm_int<Arch>(p, x.cview(), got.view());
          const Index bad = vitc_test::first_mismatch(ref, got);
          if (bad >= 0) {
            CAPTURE(c);
            CAPTURE(mode);
            CAPTURE(bad);
            CAPTURE(ptf);
            CHECK(bad < 0);
          }
          CHECK(got.storage == ref.storage);
        }
      }
    };
    for (Index c : {1, 2, 7, 15, 16, 17, 31, 32, 33, 64, 192, 197, 384, 768, 4096, 4099}) {
      CAPTURE(c);
      for (bool ptf : {false, true}) {
        check_all(std::int8_t{}, c, ptf);
        check_all(std::int16_t{}, c, ptf);
        check_all(std::int32_t{}, c, ptf);
      }
    }
  }

  TEST_CASE("layernorm_int checks shapes and strides, and threads give the same result") {
    std::mt19937 rng(8);
    const Affine a = random_affine(rng, 192, true);
    const LayerNormParams p = prepare_layernorm(a.gamma, a.beta, 0.02f, 0.03f, 1e-6f, a.ptf);
    Strided<std::int8_t> x(4, 192, 0, 0), x_bad(4, 191, 0, 0);
    Strided<std::int8_t> y(4, 192, 0, 0), y_bad(3, 192, 0, 0);
    CHECK_THROWS_WITH_AS(layernorm_int(p, x_bad.cview(), y.view()), doctest::Contains("channels"),
                         vitc::ShapeError);
    CHECK_THROWS_AS(layernorm_int(p, x.cview(), y_bad.view()), vitc::ShapeError);
    Strided<std::int8_t> big(197, 192, 0, 0);
    for (auto& v : big.storage) v = static_cast<std::int8_t>(rng());
    Strided<std::int8_t> r1(197, 192, 0, 0), r2(197, 192, 0, 0);
    layernorm_int(p, big.cview(), r1.view());
    vitc::ThreadPool pool(2);
    layernorm_int(p, big.cview(), r2.view(), pool);
    CHECK(r1.storage == r2.storage);
  }
}
