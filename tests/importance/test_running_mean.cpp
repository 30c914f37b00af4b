// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "vitcompress/importance/running_mean.hpp"

using vitc::importance::RunningMeans;

TEST_SUITE("importance") {
  TEST_CASE("RunningMeans: the mean over several samples is the arithmetic mean, per slot") {
    RunningMeans acc({3, 2});
    const std::vector<float> a{1, 2, 3}, b{4, -5, 6}, c{-2, 0, 0.5f};
    acc.add(0, std::span<const float>(a));
    acc.add(0, std::span<const float>(b));
    acc.add(0, std::span<const float>(c));
    const std::vector<double> d{10, 20};
    acc.add(1, std::span<const double>(d));
    CHECK(acc.count(0) == 3);
    CHECK(acc.count(1) == 1);
    const auto m = acc.mean(0);
    CHECK(m[0] == doctest::Approx((1 + 4 - 2) / 3.0));
    CHECK(m[1] == doctest::Approx((2 - 5 + 0) / 3.0));
    CHECK(m[2] == doctest::Approx((3 + 6 + 0.5) / 3.0));
    CHECK(acc.sum(0)[2] == doctest::Approx(9.5));
    CHECK(acc.mean(1)[1] == doctest::Approx(20));
    std::vector<float> out(3);
    acc.mean(0, std::span<float>(out));
    CHECK(out[0] == doctest::Approx(1.0));
  }

  TEST_CASE("RunningMeans: squared samples average (the empirical Fisher), not the last sample") {
    // Torch-Pruning 1.6.1 overwrites its sum on every sample, so its "mean" of g^2 is the last
    // sample's g^2 = {0.25, 9}. The true mean over the three samples is below.
    RunningMeans acc({2});
    const std::vector<double> g1{1, -2}, g2{3, 0}, g3{-0.5, 3};
    for (const auto* g : {&g1, &g2, &g3}) acc.add_squared(0, std::span<const double>(*g));
    const auto h = acc.mean(0);
    CHECK(h[0] == doctest::Approx((1 + 9 + 0.25) / 3.0));
    CHECK(h[1] == doctest::Approx((4 + 0 + 9) / 3.0));
    CHECK(h[0] != doctest::Approx(0.25));
  }

  TEST_CASE("RunningMeans: products average elementwise") {
    RunningMeans acc({2});
    const std::vector<double> v1{1, -1}, hv1{2, 3}, v2{-1, -1}, hv2{-4, 1};
    acc.add_product(0, std::span<const double>(v1), std::span<const double>(hv1));
    acc.add_product(0, std::span<const double>(v2), std::span<const double>(hv2));
    const auto m = acc.mean(0);
    CHECK(m[0] == doctest::Approx((2 + 4) / 2.0));
    CHECK(m[1] == doctest::Approx((-3 - 1) / 2.0));
  }

  TEST_CASE("RunningMeans: errors name the slot and leave the sums untouched") {
    RunningMeans acc({2});
    const std::vector<double> ok{1, 2}, wrong{1, 2, 3};
    const std::vector<double> bad{1, std::numeric_limits<double>::quiet_NaN()};
    CHECK_THROWS_AS(acc.mean(0), vitc::ArgumentError);  // no sample yet
    acc.add(0, std::span<const double>(ok));
    CHECK_THROWS_AS(acc.add(0, std::span<const double>(wrong)), vitc::ShapeError);
    CHECK_THROWS_WITH_AS(acc.add(0, std::span<const double>(bad)), doctest::Contains("slot 0"),
                         vitc::ArgumentError);
    CHECK_THROWS_AS(acc.add(1, std::span<const double>(ok)), vitc::ArgumentError);
    CHECK(acc.count(0) == 1);
    CHECK(acc.sum(0)[0] == 1.0);
    CHECK(acc.sum(0)[1] == 2.0);
    acc.reset();
    CHECK(acc.count(0) == 0);
    CHECK(acc.sum(0)[1] == 0.0);
  }
}
