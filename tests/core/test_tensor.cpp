// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstdint>
#include <type_traits>

#include "vitcompress/core/eigen_map.hpp"
#include "vitcompress/core/tensor.hpp"

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;

TEST_SUITE("core") {
  TEST_CASE("Tensor is zero-filled, 64-byte aligned and row-major") {
    Tensor<float, 3> t({2, 3, 5});
    CHECK(t.size() == 30);
    CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
    for (float v : t.span()) CHECK(v == 0.0f);
    t(1, 2, 4) = 7.0f;
    CHECK(t.data()[1 * 15 + 2 * 5 + 4] == 7.0f);
    CHECK(t.view().strides() == vitc::Shape<3>{15, 5, 1});
  }

  TEST_CASE("Tensor copies deeply and moves cheaply") {
    Tensor<int, 1> a({4}, 3);
    Tensor<int, 1> b = a;
    b(0) = 9;
    CHECK(a(0) == 3);
    Tensor<int, 1> c = std::move(b);
    CHECK(c(0) == 9);
    CHECK(b.empty());
    Tensor<int, 1> empty({0});
    CHECK(empty.data() == nullptr);
    Tensor<int, 1> copy_of_empty = empty;
    CHECK(copy_of_empty.empty());
  }

  TEST_CASE("at() checks bounds and names the dimension") {
    Tensor<float, 2> t({2, 3});
    CHECK(t.at(1, 2) == 0.0f);
    CHECK_THROWS_WITH_AS(t.at(2, 0), "index 2 out of range in dimension 0 of shape [2, 3]",
                         vitc::ArgumentError);
    CHECK_THROWS_AS(t.at(0, -1), vitc::ArgumentError);
  }

  TEST_CASE("views of const data cannot write, and mutable views convert to const") {
    Tensor<float, 2> t({2, 2});
    TensorView<float, 2> v = t.view();
    TensorView<const float, 2> cv = v;
    static_assert(std::is_same_v<decltype(cv(0, 0)), const float&>);
    static_assert(!std::is_convertible_v<TensorView<const float, 2>, TensorView<float, 2>>);
    static_assert(std::is_same_v<decltype(std::as_const(t).view()), TensorView<const float, 2>>);
    v(0, 1) = 2.0f;
    CHECK(cv(0, 1) == 2.0f);
  }

  TEST_CASE("row views, slices, sub-views, transposes and reshapes share the storage") {
    Tensor<int, 2> t({3, 4});
    for (Index i = 0; i < 3; ++i)
      for (Index j = 0; j < 4; ++j) t(i, j) = static_cast<int>(10 * i + j);
    auto row = t.view().row(2);
    CHECK(row.extent(0) == 4);
    CHECK(row(3) == 23);
    CHECK_THROWS_AS(t.view().row(3), vitc::ArgumentError);

    auto cols = t.view().slice(1, 1, 3);
    CHECK(cols.shape() == vitc::Shape<2>{3, 2});
    CHECK(cols(2, 0) == 21);
    CHECK_FALSE(cols.is_contiguous());
    CHECK_THROWS_AS(t.view().slice(1, 2, 5), vitc::ArgumentError);
    CHECK_THROWS_AS(cols.span(), vitc::ShapeError);

    auto box = t.view().subview({1, 1}, {2, 2});
    CHECK(box(1, 1) == 22);
    auto tr = t.view().transposed();
    CHECK(tr.shape() == vitc::Shape<2>{4, 3});
    CHECK(tr(3, 1) == 13);

    auto flat = t.view().reshape<1>({12});
    CHECK(flat(5) == 11);
    CHECK_THROWS_AS(t.view().reshape<1>({11}), vitc::ShapeError);
    CHECK_THROWS_AS(cols.reshape<1>({6}), vitc::ShapeError);

    auto copy = Tensor<int, 2>::copy_of(cols);
    CHECK(copy.view().is_contiguous());
    CHECK(copy(2, 1) == 22);
  }

  TEST_CASE("hostile shapes are rejected") {
    CHECK_THROWS_AS((Tensor<float, 1>({-1})), vitc::ShapeError);
    CHECK_THROWS_AS((Tensor<float, 2>({INT64_MAX / 2, 4})), vitc::ShapeError);
    CHECK_THROWS_AS((Tensor<float, 2>({INT64_MAX / 8, 4})), vitc::ShapeError);
    float x = 0;
    CHECK_THROWS_AS((TensorView<float, 1>(&x, {-3})), vitc::ShapeError);
  }

  TEST_CASE("zero-size tensors have no elements and valid views") {
    Tensor<float, 2> t({0, 5});
    CHECK(t.empty());
    CHECK(t.view().is_contiguous());
    CHECK(t.view().span().empty());
    CHECK(t.view().slice(1, 0, 0).size() == 0);
  }

  TEST_CASE("Eigen maps share memory and respect constness") {
    Tensor<float, 2> t({3, 4});
    auto m = vitc::eigen_map(t.view());
    m(2, 3) = 5.0f;
    CHECK(t(2, 3) == 5.0f);
    auto sub = vitc::eigen_map(t.view().slice(1, 1, 4));
    CHECK(sub.cols() == 3);
    CHECK(sub(2, 2) == 5.0f);
    auto cm = vitc::eigen_map(t.cview());
    static_assert(!std::is_assignable_v<decltype(cm(0, 0)), float>);
    CHECK_THROWS_AS(vitc::eigen_map(t.view().transposed()), vitc::ShapeError);
    auto col = vitc::eigen_map(t.view().transposed().row(3));
    CHECK(col.size() == 3);
    CHECK(col(2) == 5.0f);
  }
}
