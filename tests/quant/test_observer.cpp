// SPDX-License-Identifier: Apache-2.0
// quant/observer.hpp and quant/power_of_two_factor.hpp: calibration observers.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "quant_test_util.hpp"
#include "vitcompress/quant/observer.hpp"
#include "vitcompress/quant/power_of_two_factor.hpp"

namespace {

using namespace vitc;
using namespace vitc::quant;

static_assert(Observer<MinMaxObserver>);
static_assert(Observer<MovingAverageMinMaxObserver>);
static_assert(Observer<PercentileObserver>);
static_assert(Observer<MseObserver>);

double sq_error(const Tensor<float, 2>& x, const TensorQuantParams& p) {
  Tensor<float, 2> y(x.shape());
  fake_quantize(x.cview(), p, y.view(), "x");
  double e = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(y.data()[i]) - x.data()[i];
    e += d * d;
  }
  return e;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("min-max and moving-average observers") {
    const auto a = test::uniform_tensor(8, 6, -1.0f, 2.0f, 1);
    auto b = test::uniform_tensor(8, 6, -1.0f, 2.0f, 2);
    b(0, 0) = -4.0f;
    b(3, 5) = 5.0f;
    MinMaxObserver mm;
    mm.observe(a.cview(), "x");
    mm.observe(b.cview(), "x");
    CHECK(mm.ranges()[0].lo == -4.0f);
    CHECK(mm.ranges()[0].hi == 5.0f);
    const auto p = mm.params(Asymmetric<8>::kSpec, "x");
    CHECK(p.scales[0] == doctest::Approx(9.0 / 255).epsilon(1e-6));

    MovingAverageMinMaxObserver ema({}, 0.25);
    ema.observe(a.cview(), "x");
    const Range first = ema.ranges()[0];
    ema.observe(b.cview(), "x");
    CHECK(ema.ranges()[0].lo == doctest::Approx(first.lo + 0.25 * (-4.0 - first.lo)));
    CHECK(ema.ranges()[0].hi == doctest::Approx(first.hi + 0.25 * (5.0 - first.hi)));

    MinMaxObserver per_row(PerChannel{0}.spec());
    per_row.observe(b.cview(), "x");
    REQUIRE(per_row.ranges().size() == 8);
    CHECK(per_row.ranges()[0].lo == -4.0f);
    CHECK(per_row.ranges()[3].hi == 5.0f);
    CHECK(per_row.ranges()[1].hi < 2.0f);
  }

  TEST_CASE("percentile observer: nearest-rank percentiles averaged over batches") {
    Tensor<float, 2> x({100, 100});
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(i);  // 0..9999
    PercentileObserver p99({}, 99.0);
    p99.observe(x.cview(), "x");
    CHECK(p99.ranges()[0].hi == 9900.0f);  // rank ceil(0.99 · 9999) = 9900
    CHECK(p99.ranges()[0].lo == 99.0f);    // rank floor(0.01 · 9999) = 99
    Tensor<float, 2> y = x;
    for (float& v : y.span()) v *= 3.0f;
    p99.observe(y.cview(), "x");
    CHECK(p99.ranges()[0].hi == doctest::Approx((9900.0 + 29700.0) / 2));
    PercentileObserver all({}, 100.0);
    all.observe(x.cview(), "x");
    CHECK(all.ranges()[0].hi == 9999.0f);
    CHECK(all.ranges()[0].lo == 0.0f);
  }

  TEST_CASE("MSE observer clips a long tail and lowers the error") {
    Tensor<float, 2> x({64, 256});
    std::mt19937_64 rng(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : x.span()) v = normal(rng);
    x(5, 7) = 40.0f;  // one outlier
    for (int bits : {4, 8}) {
      CAPTURE(bits);
      for (SchemeKind kind : {SchemeKind::kSymmetric, SchemeKind::kAsymmetric}) {
        const SchemeSpec s{kind, bits};
        MinMaxObserver mm;
        mm.observe(x.cview(), "x");
        MseObserver mse({}, Index{1} << 20);  // keeps every value
        mse.observe(x.cview(), "x");
        const auto pm = mm.params(s, "x");
        const auto pe = mse.params(s, "x");
        CHECK(pe.scales[0] < pm.scales[0]);
        CHECK(sq_error(x, pe) < sq_error(x, pm));
      }
    }
    // Without a tail at 8 bits clipping buys little: the chosen range stays close to min-max.
    auto u = test::uniform_tensor(16, 64, -1.0f, 1.0f, 3);
    MseObserver mse;
    mse.observe(u.cview(), "u");
    CHECK(mse.params(Symmetric<8>::kSpec, "u").scales[0] > 0.9f / 127);
  }

  TEST_CASE("MSE observer samples at most max_samples values per group, deterministically") {
    const auto x = test::uniform_tensor(100, 100, -1.0f, 1.0f, 8);
    MseObserver a({}, 1000), b({}, 1000);
    for (int i = 0; i < 3; ++i) {
      a.observe(x.cview(), "x");
      b.observe(x.cview(), "x");
    }
    CHECK(a.params(Asymmetric<4>::kSpec, "x").scales == b.params(Asymmetric<4>::kSpec, "x").scales);
  }

  TEST_CASE("observer errors name the tensor") {
    auto x = test::uniform_tensor(4, 4, -1, 1, 1);
    x(1, 1) = std::numeric_limits<float>::quiet_NaN();
    for (ObserverKind k : {ObserverKind::kMinMax, ObserverKind::kMovingAverage,
                           ObserverKind::kPercentile, ObserverKind::kMse}) {
      CAPTURE(to_string(k));
      AnyObserver o = make_observer({k}, {});
      test::check_throws_containing<ArgumentError>(
          [&] { observe(o, x.cview(), "blocks.2.fc2_input"); }, "blocks.2.fc2_input");
      test::check_throws_containing<ArgumentError>(
          [&] { (void)observer_params(o, Symmetric<8>::kSpec, "blocks.2.query"); },
          "blocks.2.query");  // nothing observed yet
    }
    MinMaxObserver per_col(PerChannel{1}.spec());
    const auto a = test::uniform_tensor(3, 4, -1, 1, 2);
    const auto b = test::uniform_tensor(3, 5, -1, 1, 2);
    per_col.observe(a.cview(), "x");
    CHECK_THROWS_AS(per_col.observe(b.cview(), "x"), ShapeError);
    CHECK_THROWS_AS(PercentileObserver({}, 40.0), ArgumentError);
    CHECK_THROWS_AS(MovingAverageMinMaxObserver({}, 0.0), ArgumentError);
    CHECK(observer_kind_from_string("percentile") == ObserverKind::kPercentile);
    CHECK_THROWS_AS((void)observer_kind_from_string("histogram"), ArgumentError);
  }

  TEST_CASE("power-of-two factor: a one-signed range is covered and zero stays exact") {
    // Values in [2, 6]: the range is widened to [0, 6] (zero point 0), so no value saturates.
    const auto x = test::uniform_tensor(64, 3, 2.0f, 6.0f, 17);
    PtfObserver ptf;
    ptf.observe(x.cview(), "blocks.2.mlp_residual");
    const PtfParams p = ptf.params(8, "blocks.2.mlp_residual");
    CHECK(p.zero_point == 0);
    const auto tp = p.as_tensor_params();
    Tensor<float, 2> fq(x.shape());
    fake_quantize(x.cview(), tp, fq.view(), "x");
    for (Index r = 0; r < 64; ++r)
      for (Index c = 0; c < 3; ++c) {
        CAPTURE(c);
        REQUIRE(std::abs(fq(r, c) - x(r, c)) <=
                0.5f * tp.scales[static_cast<std::size_t>(c)] * (1 + 1e-5f));
        CHECK(fake_quantize_value(0.0f, tp.group(c), tp.scheme) == 0.0f);
      }
  }

  TEST_CASE("power-of-two factor: outlier channels get their own factor, one base scale") {
    // Channel 0 spans [−8, 8], the others [−1, 1]: PTF gives channel 0 α = 3 and the rest α = 0.
    Tensor<float, 2> x({512, 6});
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (Index r = 0; r < 512; ++r)
      for (Index c = 0; c < 6; ++c) x(r, c) = (c == 0 ? 8.0f : 1.0f) * u(rng);
    PtfObserver ptf;
    ptf.observe(x.cview(), "blocks.0.block_input");
    const PtfParams p = ptf.params(8, "blocks.0.block_input");
    CHECK(p.alpha[0] == 3);
    for (std::size_t c = 1; c < 6; ++c) CHECK(p.alpha[c] == 0);
    const auto tp = p.as_tensor_params();
    REQUIRE(tp.scales.size() == 6);
    CHECK(tp.scales[0] == 8.0f * tp.scales[1]);
    for (std::int32_t z : tp.zero_points) CHECK(z == p.zero_point);
    // Better than one per-tensor scale, and identical to it when every α is 3.
    MinMaxObserver mm;
    mm.observe(x.cview(), "x");
    const auto per_tensor = mm.params(Asymmetric<8>::kSpec, "x");
    CHECK(sq_error(x, tp) < 0.2 * sq_error(x, per_tensor));
    PtfParams all3 = p;
    all3.alpha.assign(6, 3);
    const auto t3 = all3.as_tensor_params();
    CHECK(t3.scales[0] == doctest::Approx(per_tensor.scales[0]).epsilon(1e-6));
    CHECK(t3.zero_points[0] == per_tensor.zero_points[0]);
    // Errors.
    x(3, 3) = std::numeric_limits<float>::infinity();
    PtfObserver bad;
    test::check_throws_containing<ArgumentError>(
        [&] { bad.observe(x.cview(), "final_norm_input"); }, "final_norm_input");
    CHECK_THROWS_AS((void)PtfObserver().params(8, "x"), ArgumentError);
    CHECK_THROWS_AS((void)ptf.params(9, "x"), ArgumentError);
  }
}
