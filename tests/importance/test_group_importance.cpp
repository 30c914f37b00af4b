// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/importance/group_importance.hpp"
#include "vitcompress/importance/hessian_diag.hpp"
#include "vitcompress/importance/magnitude.hpp"
#include "vitcompress/importance/taylor.hpp"

namespace imp = vitc::importance;
using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;

static_assert(imp::ImportanceEstimator<imp::Magnitude<1>>);
static_assert(imp::ImportanceEstimator<imp::Magnitude<2>>);
static_assert(imp::ImportanceEstimator<imp::Taylor>);
static_assert(imp::ImportanceEstimator<imp::HessianDiag<imp::EmpiricalFisher>>);
static_assert(imp::ImportanceEstimator<imp::HessianDiag<imp::Hutchinson>>);
static_assert(imp::GroupNormalizer<imp::normalize::Lamp>);

// Named, not anonymous: the test family builds as one unity TU.
namespace group_importance_test {

Tensor<double, 2> matrix(Index rows, Index cols, std::vector<double> values) {
  Tensor<double, 2> t({rows, cols});
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = values[static_cast<std::size_t>(i)];
  return t;
}

// A constant "estimator" that returns the weight itself, signed or not, to test reductions.
template <bool Signed>
struct Identity {
  static constexpr bool kNeedsStatistic = false;
  static constexpr bool kSigned = Signed;
  static constexpr std::string_view name() { return "identity"; }
  static constexpr double contribution(double w, double) { return w; }
};

TEST_SUITE("importance") {
  TEST_CASE("channel_view: the pruned dimension in the middle, any rank") {
    Tensor<float, 4> conv({3, 2, 2, 2});
    for (Index i = 0; i < conv.size(); ++i) conv.data()[i] = static_cast<float>(i);
    auto rows = imp::channel_view(conv.cview(), 0);
    CHECK(rows.shape() == vitc::Shape<3>{1, 3, 8});
    CHECK(rows(0, 2, 5) == 21.0f);
    auto cin = imp::channel_view(conv.cview(), 1);
    CHECK(cin.shape() == vitc::Shape<3>{3, 2, 4});
    CHECK(cin(2, 1, 3) == conv(2, 1, 1, 1));

    Tensor<float, 3> pos({1, 5, 4});  // [1, T, D], pruned along D
    for (Index i = 0; i < pos.size(); ++i) pos.data()[i] = static_cast<float>(i);
    auto d = imp::channel_view(pos.cview(), 2);
    CHECK(d.shape() == vitc::Shape<3>{5, 4, 1});
    CHECK(d(3, 1, 0) == pos(0, 3, 1));

    Tensor<float, 2> w({2, 3});
    for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(i);
    auto wt = TensorView<const float, 2>(w.cview()).transposed();  // [3, 2], strided
    auto cols = imp::channel_view(wt, 0);
    CHECK(cols(0, 2, 1) == w(1, 2));

    // A [2, 3, 4] tensor sliced along its last dimension cannot merge dims 1 and 2.
    Tensor<float, 3> t({2, 3, 4});
    auto sliced = TensorView<const float, 3>(t.cview()).slice(2, 0, 2);
    CHECK_THROWS_AS(imp::channel_view(sliced, 0), vitc::ShapeError);
    CHECK_THROWS_AS(imp::channel_view(t.cview(), 3), vitc::ArgumentError);
  }

  TEST_CASE("reductions combine members per unit; signed estimators keep the sign through sum") {
    // Member a: rows of [[1, 1], [-1, 3]] -> local (2, 2); member b: one row per unit -> (-3, 5).
    const auto a = matrix(2, 2, {1, 1, -1, 3});
    const auto b = matrix(2, 1, {-3, 5});
    const std::vector<Index> units{0, 1};
    const std::vector<imp::GroupMember<double>> members{
        {"a", imp::channel_view(a.cview(), 0), {}, units},
        {"b", imp::channel_view(b.cview(), 0), {}, units}};
    using S = Identity<true>;
    using N = imp::normalize::None;
    auto sum = imp::group_importance<S, imp::reduce::Sum, N>(members, 2);
    CHECK(sum[0] == doctest::Approx(1.0));  // |2 - 3|
    CHECK(sum[1] == doctest::Approx(7.0));
    auto mean = imp::group_importance<S, imp::reduce::Mean, N>(members, 2);
    CHECK(mean[0] == doctest::Approx(0.5));
    CHECK(mean[1] == doctest::Approx(3.5));
    auto max = imp::group_importance<S, imp::reduce::Max, N>(members, 2);
    CHECK(max[0] == doctest::Approx(3.0));  // max(|2|, |-3|)
    CHECK(max[1] == doctest::Approx(5.0));
    auto first = imp::group_importance<S, imp::reduce::First, N>(members, 2);
    CHECK(first[0] == doctest::Approx(2.0));
    CHECK(first[1] == doctest::Approx(2.0));
    // Unsigned: max keeps the signed local value.
    auto umax = imp::group_importance<Identity<false>, imp::reduce::Max, N>(members, 2);
    CHECK(umax[0] == doctest::Approx(2.0));
  }

  TEST_CASE("mean counts only the members that hold a unit; channels may be outside the group") {
    const auto a = matrix(3, 1, {2, 4, 100});
    const auto b = matrix(1, 1, {6});
    const std::vector<Index> ua{0, 1, imp::kNoUnit}, ub{1};
    const std::vector<imp::GroupMember<double>> members{
        {"a", imp::channel_view(a.cview(), 0), {}, ua},
        {"b", imp::channel_view(b.cview(), 0), {}, ub}};
    auto s = imp::group_importance<imp::Magnitude<1>, imp::reduce::Mean, imp::normalize::None>(
        members, 2);
    CHECK(s[0] == doctest::Approx(2.0));
    CHECK(s[1] == doctest::Approx(5.0));  // (4 + 6) / 2
    // Several channels per unit add up (a head owns several rows).
    const std::vector<Index> both{0, 0, 1};
    const std::vector<imp::GroupMember<double>> one{
        {"a", imp::channel_view(a.cview(), 0), {}, both}};
    auto h =
        imp::group_importance<imp::Magnitude<1>, imp::reduce::Sum, imp::normalize::None>(one, 2);
    CHECK(h[0] == doctest::Approx(6.0));
    CHECK(h[1] == doctest::Approx(100.0));
  }

  TEST_CASE("normalizers") {
    const std::vector<double> base{1, 2, 3, 4};
    auto s = base;
    imp::normalize::Mean::apply(s);
    CHECK(s[3] == doctest::Approx(1.6));
    s = base;
    imp::normalize::Max::apply(s);
    CHECK(s[1] == doctest::Approx(0.5));
    s = base;
    imp::normalize::Sum::apply(s);
    CHECK(s[2] == doctest::Approx(0.3));
    s = {3, 1, 4, 2};
    imp::normalize::Lamp::apply(s);  // ascending 1, 2, 3, 4: 1/10, 2/9, 3/7, 4/4
    CHECK(s[1] == doctest::Approx(0.1));
    CHECK(s[3] == doctest::Approx(2.0 / 9));
    CHECK(s[0] == doctest::Approx(3.0 / 7));
    CHECK(s[2] == doctest::Approx(1.0));
    s = {0, 0, 0};
    imp::normalize::Mean::apply(s);
    imp::normalize::Lamp::apply(s);
    CHECK(s[0] == 0.0);
  }

  TEST_CASE("group_importance rejects inconsistent members") {
    const auto a = matrix(2, 2, {1, 2, 3, 4});
    const auto g = matrix(2, 1, {1, 2});
    const std::vector<Index> units{0, 1}, short_units{0}, bad_units{0, 7};
    using M = imp::Magnitude<2>;
    using R = imp::reduce::Sum;
    using N = imp::normalize::None;
    auto run = [&](std::vector<imp::GroupMember<double>> m, Index n) {
      return imp::group_importance<M, R, N>(m, n);
    };
    CHECK_THROWS_AS(run({{"a", imp::channel_view(a.cview(), 0), {}, short_units}}, 2),
                    vitc::ShapeError);
    CHECK_THROWS_WITH_AS(run({{"a", imp::channel_view(a.cview(), 0), {}, bad_units}}, 2),
                         doctest::Contains("a: channel 1 maps to unit 7"), vitc::ArgumentError);
    CHECK_THROWS_AS(run({{"a", imp::channel_view(a.cview(), 0), {}, units}}, 3),
                    vitc::ArgumentError);  // unit 2 has no member
    CHECK_THROWS_AS(run({}, 2), vitc::ArgumentError);
    const std::vector<imp::GroupMember<double>> taylor{
        {"a", imp::channel_view(a.cview(), 0), imp::channel_view(g.cview(), 0), units}};
    CHECK_THROWS_WITH_AS((imp::group_importance<imp::Taylor, R, N>(taylor, 2)),
                         doctest::Contains("a: the statistic"), vitc::ShapeError);
    auto nan = a;
    nan(1, 0) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(run({{"w", imp::channel_view(nan.cview(), 0), {}, units}}, 2),
                    vitc::ArgumentError);
  }
}

}  // namespace group_importance_test
