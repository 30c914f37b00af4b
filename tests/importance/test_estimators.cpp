// SPDX-License-Identifier: Apache-2.0
// Magnitude, Taylor and Hessian-diagonal importance against values computed by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <span>
#include <vector>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/importance/group_importance.hpp"
#include "vitcompress/importance/hessian_diag.hpp"
#include "vitcompress/importance/magnitude.hpp"
#include "vitcompress/importance/running_mean.hpp"
#include "vitcompress/importance/taylor.hpp"

namespace imp = vitc::importance;
using vitc::Index;
using vitc::Tensor;

namespace {

Tensor<double, 2> matrix(Index rows, Index cols, std::vector<double> values) {
  Tensor<double, 2> t({rows, cols});
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = values[static_cast<std::size_t>(i)];
  return t;
}

template <class E, class T = double>
std::vector<double> rows_score(const Tensor<T, 2>& w, const Tensor<T, 2>* s = nullptr) {
  std::vector<Index> units(static_cast<std::size_t>(w.extent(0)));
  for (std::size_t i = 0; i < units.size(); ++i) units[i] = static_cast<Index>(i);
  std::vector<imp::GroupMember<T>> m{
      {"w", imp::channel_view(w.cview(), 0),
       s ? imp::channel_view(s->cview(), 0) : vitc::TensorView<const T, 3>{}, units}};
  return imp::group_importance<E, imp::reduce::Sum, imp::normalize::None>(m, w.extent(0));
}

}  // namespace

TEST_SUITE("importance") {
  TEST_CASE("Magnitude: L1 and squared L2 (Frobenius) of rows and columns") {
    const auto w = matrix(2, 2, {1, -2, 3, -4});
    auto l1 = rows_score<imp::Magnitude<1>>(w);
    CHECK(l1[0] == doctest::Approx(3));
    CHECK(l1[1] == doctest::Approx(7));
    auto l2 = rows_score<imp::Magnitude<2>>(w);
    CHECK(l2[0] == doctest::Approx(5));
    CHECK(l2[1] == doctest::Approx(25));
    // Columns (a linear layer's input channels).
    const std::vector<Index> units{0, 1};
    std::vector<imp::GroupMember<double>> cols{{"w", imp::channel_view(w.cview(), 1), {}, units}};
    auto c =
        imp::group_importance<imp::Magnitude<2>, imp::reduce::Sum, imp::normalize::None>(cols, 2);
    CHECK(c[0] == doctest::Approx(10));
    CHECK(c[1] == doctest::Approx(20));
    // Float input works the same.
    Tensor<float, 2> wf({1, 3});
    wf(0, 0) = 0.5f;
    wf(0, 1) = -1.5f;
    wf(0, 2) = 2.0f;
    CHECK(rows_score<imp::Magnitude<1>, float>(wf)[0] == doctest::Approx(4.0));
  }

  TEST_CASE("Taylor: |sum of w * mean gradient| per unit") {
    const auto w = matrix(2, 2, {1, 2, 3, 4});
    const auto g = matrix(2, 2, {0.5, -1, 2, 0.25});
    auto t = rows_score<imp::Taylor>(w, &g);
    CHECK(t[0] == doctest::Approx(1.5));  // |0.5 - 2|
    CHECK(t[1] == doctest::Approx(7.0));  // 6 + 1
    // The mean gradient over calibration batches comes from RunningMeans.
    imp::RunningMeans acc({4});
    const std::vector<double> g1{1, -2, 4, 0}, g2{0, 0, 0, 0.5};
    acc.add(0, std::span<const double>(g1));
    acc.add(0, std::span<const double>(g2));
    const auto mean = acc.mean(0);
    const auto gm = matrix(2, 2, mean);
    auto tm = rows_score<imp::Taylor>(w, &gm);
    CHECK(tm[0] == doctest::Approx(std::abs(1 * 0.5 + 2 * -1.0)));
    CHECK(tm[1] == doctest::Approx(3 * 2.0 + 4 * 0.25));
  }

  TEST_CASE("HessianDiag: half w^2 h, negative curvature estimates clamp to zero") {
    const auto w = matrix(2, 2, {1, -2, 3, 0.5});
    const auto h = matrix(2, 2, {4, 1, -1, 8});
    auto s = rows_score<imp::HessianDiag<imp::Hutchinson>>(w, &h);
    CHECK(s[0] == doctest::Approx(0.5 * (1 * 4 + 4 * 1)));
    CHECK(s[1] == doctest::Approx(0.5 * (0 + 0.25 * 8)));
  }

  TEST_CASE("HessianDiag<EmpiricalFisher>: h is the mean of squared per-sample gradients") {
    const auto w = matrix(1, 2, {2, -1});
    imp::RunningMeans acc({2});
    const std::vector<double> g1{1, 2}, g2{-3, 0}, g3{0, -1};
    for (const auto* g : {&g1, &g2, &g3})
      imp::EmpiricalFisher::accumulate(acc, 0, std::span<const double>(*g));
    const auto h = matrix(1, 2, acc.mean(0));
    CHECK(h(0, 0) == doctest::Approx(10.0 / 3));
    CHECK(h(0, 1) == doctest::Approx(5.0 / 3));
    auto s = rows_score<imp::HessianDiag<imp::EmpiricalFisher>>(w, &h);
    CHECK(s[0] == doctest::Approx(0.5 * (4 * 10.0 / 3 + 1 * 5.0 / 3)));
  }

  TEST_CASE("Hutchinson converges to the exact Hessian diagonal of a quadratic") {
    // L(w) = 1/2 w^T A w + b^T w over two parameter tensors (sizes 3 and 2), A symmetric with
    // strong off-diagonal terms; grad = A w + b, diag(H) = diag(A).
    const int n = 5;
    const double a[n][n] = {{4, 1, -2, 0.5, 1},
                            {1, 3, 0.5, -1, 0},
                            {-2, 0.5, 5, 1, -0.5},
                            {0.5, -1, 1, 2, 0.25},
                            {1, 0, -0.5, 0.25, 1.5}};
    const double b[n] = {0.1, -0.2, 0.3, 0, 1};
    std::vector<double> w1{0.3, -1.2, 2.0}, w2{0.7, -0.4};
    const std::vector<double> w1_saved = w1, w2_saved = w2;
    std::vector<std::span<double>> params{std::span<double>(w1), std::span<double>(w2)};
    auto gradient = [&](std::span<const std::span<double>> g) {
      double x[n];
      for (int i = 0; i < 3; ++i) x[i] = w1[static_cast<std::size_t>(i)];
      for (int i = 0; i < 2; ++i) x[3 + i] = w2[static_cast<std::size_t>(i)];
      for (int i = 0; i < n; ++i) {
        double s = b[i];
        for (int j = 0; j < n; ++j) s += a[i][j] * x[j];
        g[i < 3 ? 0 : 1][static_cast<std::size_t>(i < 3 ? i : i - 3)] = s;
      }
    };
    imp::RunningMeans acc({3, 2});
    std::mt19937_64 rng(42);

    // One probe is exactly v (.) A v for the v drawn (finite differences of a linear gradient).
    {
      std::mt19937_64 copy = rng;
      imp::RunningMeans one({3, 2});
      imp::hutchinson_probe(std::span<const std::span<double>>(params), gradient, copy, 1e-2, one);
      std::uint64_t bits = std::mt19937_64(42)();
      double v[n];
      for (int i = 0; i < n; ++i) v[i] = ((bits >> i) & 1) ? 1.0 : -1.0;
      for (int i = 0; i < n; ++i) {
        double av = 0;
        for (int j = 0; j < n; ++j) av += a[i][j] * v[j];
        const double got = i < 3 ? one.sum(0)[static_cast<std::size_t>(i)]
                                 : one.sum(1)[static_cast<std::size_t>(i - 3)];
        CHECK(got == doctest::Approx(v[i] * av).epsilon(1e-9));
      }
      CHECK(w1 == w1_saved);  // restored bit for bit
      CHECK(w2 == w2_saved);
    }

    const int probes = 20000;
    for (int k = 0; k < probes; ++k)
      imp::hutchinson_probe(std::span<const std::span<double>>(params), gradient, rng, 1e-3, acc);
    CHECK(acc.count(0) == probes);
    const auto h1 = acc.mean(0), h2 = acc.mean(1);
    for (int i = 0; i < n; ++i) {
      double off = 0;  // variance of one probe: sum_{j != i} A_ij^2
      for (int j = 0; j < n; ++j)
        if (j != i) off += a[i][j] * a[i][j];
      const double tolerance = 5 * std::sqrt(off / probes);
      const double got =
          i < 3 ? h1[static_cast<std::size_t>(i)] : h2[static_cast<std::size_t>(i - 3)];
      CAPTURE(i);
      CHECK(std::abs(got - a[i][i]) < tolerance);
    }
    CHECK(w1 == w1_saved);
    CHECK(w2 == w2_saved);
  }

  TEST_CASE("hutchinson_probe: bad arguments, and parameters restored when the gradient throws") {
    std::vector<double> w{1, 2};
    std::vector<std::span<double>> params{std::span<double>(w)};
    imp::RunningMeans acc({2}), wrong({3});
    std::mt19937_64 rng(1);
    auto grad = [](std::span<const std::span<double>> g) { g[0][0] = g[0][1] = 0; };
    CHECK_THROWS_AS(
        imp::hutchinson_probe(std::span<const std::span<double>>(params), grad, rng, 0.0, acc),
        vitc::ArgumentError);
    CHECK_THROWS_AS(
        imp::hutchinson_probe(std::span<const std::span<double>>(params), grad, rng, 1e-3, wrong),
        vitc::ShapeError);
    auto throwing = [](std::span<const std::span<double>>) { throw vitc::ArgumentError("boom"); };
    CHECK_THROWS_AS(
        imp::hutchinson_probe(std::span<const std::span<double>>(params), throwing, rng, 1e-3, acc),
        vitc::ArgumentError);
    CHECK(w[0] == 1.0);
    CHECK(w[1] == 2.0);
    CHECK(acc.count(0) == 0);
  }
}
