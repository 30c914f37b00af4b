// SPDX-License-Identifier: Apache-2.0
#pragma once
// Eigen interop: a 2-D view whose rows are contiguous maps to a row-major Eigen matrix without a
// copy; a 1-D view maps to a vector with its inner stride. Const views map to const matrices, so
// Eigen cannot write through them either.

#include <type_traits>

#include <Eigen/Core>

#include "vitcompress/core/tensor.hpp"

namespace vitc {

template <class T>
using RowMajorMatrix =
    Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
using MatrixMap =
    Eigen::Map<std::conditional_t<std::is_const_v<T>, const RowMajorMatrix<T>, RowMajorMatrix<T>>,
               Eigen::Unaligned, Eigen::OuterStride<>>;

template <class T>
using VectorMap =
    Eigen::Map<std::conditional_t<std::is_const_v<T>,
                                  const Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, 1>,
                                  Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, 1>>,
               Eigen::Unaligned, Eigen::InnerStride<>>;

// Rows must be contiguous (stride(1) == 1); the row stride may be anything >= the row length.
template <class T>
MatrixMap<T> eigen_map(const TensorView<T, 2>& view) {
  if (view.extent(1) > 1 && view.stride(1) != 1)
    VITC_THROW(ShapeError("eigen_map: the rows of a view of shape " +
                          detail::shape_string(view.shape()) + " are not contiguous"));
  const Index outer = view.extent(0) > 1 ? view.stride(0) : view.extent(1);
  return MatrixMap<T>(view.data(), view.extent(0), view.extent(1), Eigen::OuterStride<>(outer));
}

template <class T>
VectorMap<T> eigen_map(const TensorView<T, 1>& view) {
  return VectorMap<T>(view.data(), view.extent(0), Eigen::InnerStride<>(view.stride(0)));
}

}  // namespace vitc
