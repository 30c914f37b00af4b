// SPDX-License-Identifier: Apache-2.0
#pragma once
// Tensors every stage passes around.
//
// TensorView<T, Rank> is a non-owning window on memory: a pointer, a shape and strides counted in
// elements (not bytes). It is cheap to copy and never allocates. A view of `const T` cannot write;
// a view of `T` converts implicitly to one of `const T`, never the other way. Indexing with
// operator() is unchecked (a debug-build assertion only) and meant for loops whose bounds are
// already validated; at() and the sub-view functions check and throw vitc::ArgumentError or
// vitc::ShapeError naming the dimension and the shape.
//
// Tensor<T, Rank> owns a contiguous row-major buffer aligned to 64 bytes (one cache line, one
// AVX-512 register), zero-filled on construction. Copies are deep; moves are cheap.
//
// Neither type knows Eigen: core/eigen_map.hpp maps contiguous 2-D views to Eigen matrices, so
// that kernels/ can use tensors without pulling Eigen in.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/error.hpp"

namespace vitc {

// Extents, strides and indices are signed 64-bit so that differences and products of sizes never
// wrap silently; negative extents are rejected at construction.
using Index = std::int64_t;

template <std::size_t Rank>
using Shape = std::array<Index, Rank>;

namespace detail {

template <std::size_t Rank>
std::string shape_string(const Shape<Rank>& shape) {
  std::string s = "[";
  for (std::size_t d = 0; d < Rank; ++d) {
    if (d) s += ", ";
    s += std::to_string(shape[d]);
  }
  return s + "]";
}

// Product of extents; throws ShapeError on a negative extent or on overflow of Index.
template <std::size_t Rank>
Index checked_element_count(const Shape<Rank>& shape) {
  Index count = 1;
  for (std::size_t d = 0; d < Rank; ++d) {
    if (shape[d] < 0)
      VITC_THROW(ShapeError("negative extent in dimension " + std::to_string(d) + " of shape " +
                            shape_string(shape)));
    if (shape[d] != 0 && count > INT64_MAX / shape[d])
      VITC_THROW(ShapeError("element count of shape " + shape_string(shape) + " overflows"));
    count *= shape[d];
  }
  for (std::size_t d = 0; d < Rank; ++d)
    if (shape[d] == 0) return 0;
  return count;
}

template <std::size_t Rank>
constexpr Shape<Rank> row_major_strides(const Shape<Rank>& shape) noexcept {
  Shape<Rank> strides{};
  Index stride = 1;
  for (std::size_t d = Rank; d-- > 0;) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

}  // namespace detail

template <class T, std::size_t Rank>
class TensorView {
  static_assert(Rank >= 1, "a rank-0 tensor is a scalar: pass the value itself");
  static_assert(std::is_trivially_copyable_v<std::remove_const_t<T>>,
                "tensors hold trivially copyable element types");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  static constexpr std::size_t kRank = Rank;

  constexpr TensorView() noexcept = default;

  // A contiguous row-major view.
  TensorView(T* data, const Shape<Rank>& shape)
      : data_(data), shape_(shape), strides_(detail::row_major_strides(shape)) {
    detail::checked_element_count(shape);
  }

  // A strided view; strides are in elements and may be zero (broadcast) or negative.
  TensorView(T* data, const Shape<Rank>& shape, const Shape<Rank>& strides)
      : data_(data), shape_(shape), strides_(strides) {
    detail::checked_element_count(shape);
  }

  // Mutable -> const; the reverse is deliberately absent.
  template <class U>
  requires(std::is_const_v<T>&& std::is_same_v<const U, T>) constexpr TensorView(
      const TensorView<U, Rank>& other) noexcept  // NOLINT(google-explicit-constructor)
      : data_(other.data()), shape_(other.shape()), strides_(other.strides()) {}

  [[nodiscard]] T* data() const noexcept { return data_; }
  [[nodiscard]] const Shape<Rank>& shape() const noexcept { return shape_; }
  [[nodiscard]] Index extent(std::size_t dim) const noexcept { return shape_[dim]; }
  [[nodiscard]] const Shape<Rank>& strides() const noexcept { return strides_; }
  [[nodiscard]] Index stride(std::size_t dim) const noexcept { return strides_[dim]; }

  [[nodiscard]] Index size() const noexcept {
    Index n = 1;
    for (Index e : shape_) n *= e;
    return n;
  }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  [[nodiscard]] bool is_contiguous() const noexcept {
    if (empty()) return true;
    Index expected = 1;
    for (std::size_t d = Rank; d-- > 0;) {
      if (shape_[d] != 1 && strides_[d] != expected) return false;
      expected *= shape_[d];
    }
    return true;
  }

  // Unchecked element access.
  template <class... I>
  requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...)) T& operator()(
      I... index) const noexcept {
    const Shape<Rank> idx{static_cast<Index>(index)...};
    Index offset = 0;
    for (std::size_t d = 0; d < Rank; ++d) {
      VITC_DCHECK(idx[d] >= 0 && idx[d] < shape_[d]);
      offset += idx[d] * strides_[d];
    }
    return data_[offset];
  }

  // Checked element access.
  template <class... I>
  requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...)) T& at(I... index) const {
    const Shape<Rank> idx{static_cast<Index>(index)...};
    Index offset = 0;
    for (std::size_t d = 0; d < Rank; ++d) {
      check_index(d, idx[d]);
      offset += idx[d] * strides_[d];
    }
    return data_[offset];
  }

  // The sub-tensor at index i of the first dimension (for a matrix: row i). Unchecked.
  TensorView<T, Rank - 1> operator[](Index i) const noexcept requires(Rank > 1) {
    VITC_DCHECK(i >= 0 && i < shape_[0]);
    return drop_first(i);
  }

  // The sub-tensor at index i of the first dimension, checked.
  TensorView<T, Rank - 1> row(Index i) const requires(Rank > 1) {
    check_index(0, i);
    return drop_first(i);
  }

  // Elements [begin, end) along one dimension.
  TensorView slice(std::size_t dim, Index begin, Index end) const {
    if (dim >= Rank)
      VITC_THROW(ArgumentError("slice: dimension " + std::to_string(dim) + " of a rank-" +
                               std::to_string(Rank) + " tensor"));
    if (begin < 0 || end < begin || end > shape_[dim])
      VITC_THROW(ArgumentError("slice: range [" + std::to_string(begin) + ", " +
                               std::to_string(end) + ") outside dimension " + std::to_string(dim) +
                               " of shape " + detail::shape_string(shape_)));
    TensorView out = *this;
    out.shape_[dim] = end - begin;
    if (end > begin) out.data_ = data_ + begin * strides_[dim];
    return out;
  }

  // The box [offset, offset + extent) in every dimension.
  TensorView subview(const Shape<Rank>& offset, const Shape<Rank>& extent) const {
    TensorView out = *this;
    for (std::size_t d = 0; d < Rank; ++d) out = out.slice(d, offset[d], offset[d] + extent[d]);
    return out;
  }

  // Dimensions reordered: result dimension d is this view's dimension order[d].
  TensorView permute(const std::array<std::size_t, Rank>& order) const {
    TensorView out;
    out.data_ = data_;
    std::array<bool, Rank> seen{};
    for (std::size_t d = 0; d < Rank; ++d) {
      if (order[d] >= Rank || seen[order[d]])
        VITC_THROW(ArgumentError("permute: the order is not a permutation of 0.." +
                                 std::to_string(Rank - 1)));
      seen[order[d]] = true;
      out.shape_[d] = shape_[order[d]];
      out.strides_[d] = strides_[order[d]];
    }
    return out;
  }

  // The transpose of a matrix view (no copy).
  TensorView transposed() const requires(Rank == 2) { return permute({1, 0}); }

  // The same elements under another shape; the view must be contiguous.
  template <std::size_t NewRank>
  TensorView<T, NewRank> reshape(const Shape<NewRank>& shape) const {
    if (!is_contiguous())
      VITC_THROW(ShapeError("reshape: the view of shape " + detail::shape_string(shape_) +
                            " is not contiguous"));
    if (detail::checked_element_count(shape) != size())
      VITC_THROW(ShapeError("reshape: cannot view " + detail::shape_string(shape_) + " as " +
                            detail::shape_string(shape)));
    return TensorView<T, NewRank>(data_, shape);
  }

  // The elements as a span; the view must be contiguous.
  std::span<T> span() const {
    if (!is_contiguous())
      VITC_THROW(ShapeError("span: the view of shape " + detail::shape_string(shape_) +
                            " is not contiguous"));
    return {data_, static_cast<std::size_t>(size())};
  }

 private:
  void check_index(std::size_t dim, Index i) const {
    if (i < 0 || i >= shape_[dim])
      VITC_THROW(ArgumentError("index " + std::to_string(i) + " out of range in dimension " +
                               std::to_string(dim) + " of shape " + detail::shape_string(shape_)));
  }

  TensorView<T, Rank - 1> drop_first(Index i) const {
    Shape<Rank - 1> shape{}, strides{};
    for (std::size_t d = 1; d < Rank; ++d) {
      shape[d - 1] = shape_[d];
      strides[d - 1] = strides_[d];
    }
    return TensorView<T, Rank - 1>(data_ + i * strides_[0], shape, strides);
  }

  T* data_ = nullptr;
  Shape<Rank> shape_{};
  Shape<Rank> strides_{};
};

// Copies elements between views of equal shape (any strides). Throws ShapeError otherwise.
template <class U, class T, std::size_t Rank>
requires std::is_same_v<std::remove_const_t<U>, T>
void copy_view(const TensorView<U, Rank>& from, const TensorView<T, Rank>& to) {
  if (from.shape() != to.shape())
    VITC_THROW(ShapeError("copy_view: shapes " + detail::shape_string(from.shape()) + " and " +
                          detail::shape_string(to.shape()) + " differ"));
  if (from.is_contiguous() && to.is_contiguous()) {
    if (from.size() > 0)
      std::memcpy(to.data(), from.data(), static_cast<std::size_t>(from.size()) * sizeof(T));
    return;
  }
  for (Index i = 0; i < from.extent(0); ++i) {
    if constexpr (Rank == 1)
      to(i) = from(i);
    else
      copy_view(from[i], to[i]);
  }
}

template <class T, std::size_t Rank>
class Tensor {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_const_v<T>,
                "Tensor owns mutable, trivially copyable elements");

 public:
  static constexpr std::size_t kAlignment = 64;
  static constexpr std::size_t kRank = Rank;
  using value_type = T;

  Tensor() = default;

  // A zero-filled tensor.
  explicit Tensor(const Shape<Rank>& shape) : shape_(shape) {
    const Index count = detail::checked_element_count(shape);
    // No machine this library targets has 2^46 bytes (64 TiB); refusing early also keeps sizes far
    // from the overflow of the allocator's own size arithmetic.
    if (count > (Index{1} << 46) / static_cast<Index>(sizeof(T)))
      VITC_THROW(ShapeError("tensor of shape " + detail::shape_string(shape) + " is too large"));
    if (count > 0) {
      data_.reset(static_cast<T*>(::operator new[](static_cast<std::size_t>(count) * sizeof(T),
                                                   std::align_val_t{kAlignment})));
      std::memset(static_cast<void*>(data_.get()), 0, static_cast<std::size_t>(count) * sizeof(T));
    }
  }

  Tensor(const Shape<Rank>& shape, T value) : Tensor(shape) { fill(value); }

  Tensor(const Tensor& other) : Tensor(other.shape_) {
    if (size() > 0) std::memcpy(data(), other.data(), bytes());
  }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) *this = Tensor(other);
    return *this;
  }
  Tensor(Tensor&& other) noexcept
      : shape_(std::exchange(other.shape_, Shape<Rank>{})), data_(std::move(other.data_)) {}
  Tensor& operator=(Tensor&& other) noexcept {
    shape_ = std::exchange(other.shape_, Shape<Rank>{});
    data_ = std::move(other.data_);
    return *this;
  }
  ~Tensor() = default;

  // A deep copy of any view of the same rank.
  template <class U>
  requires std::is_same_v<std::remove_const_t<U>, T>
  static Tensor copy_of(const TensorView<U, Rank>& view) {
    Tensor out(view.shape());
    copy_view(view, out.view());
    return out;
  }

  [[nodiscard]] T* data() noexcept { return data_.get(); }
  [[nodiscard]] const T* data() const noexcept { return data_.get(); }
  [[nodiscard]] const Shape<Rank>& shape() const noexcept { return shape_; }
  [[nodiscard]] Index extent(std::size_t dim) const noexcept { return shape_[dim]; }
  [[nodiscard]] Index size() const noexcept {
    Index n = 1;
    for (Index e : shape_) n *= e;
    return n;
  }
  [[nodiscard]] std::size_t bytes() const noexcept {
    return static_cast<std::size_t>(size()) * sizeof(T);
  }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  [[nodiscard]] TensorView<T, Rank> view() noexcept { return {data(), shape_, strides()}; }
  [[nodiscard]] TensorView<const T, Rank> view() const noexcept {
    return {data(), shape_, strides()};
  }
  [[nodiscard]] TensorView<const T, Rank> cview() const noexcept { return view(); }
  operator TensorView<T, Rank>() noexcept { return view(); }  // NOLINT(google-explicit-constructor)
  operator TensorView<const T, Rank>() const noexcept { return view(); }  // NOLINT

  std::span<T> span() noexcept { return {data(), static_cast<std::size_t>(size())}; }
  std::span<const T> span() const noexcept { return {data(), static_cast<std::size_t>(size())}; }

  template <class... I>
  T& operator()(I... index) noexcept {
    return view()(index...);
  }
  template <class... I>
  const T& operator()(I... index) const noexcept {
    return view()(index...);
  }
  template <class... I>
  T& at(I... index) {
    return view().at(index...);
  }
  template <class... I>
  const T& at(I... index) const {
    return view().at(index...);
  }

  void fill(T value) noexcept { std::fill_n(data(), size(), value); }

 private:
  struct AlignedDelete {
    void operator()(T* p) const noexcept { ::operator delete[](p, std::align_val_t{kAlignment}); }
  };

  [[nodiscard]] Shape<Rank> strides() const noexcept { return detail::row_major_strides(shape_); }

  Shape<Rank> shape_{};
  std::unique_ptr<T[], AlignedDelete> data_;
};

// Checks that a view has the expected shape; the message names the tensor.
template <class T, std::size_t Rank>
void expect_shape(const TensorView<T, Rank>& view, const Shape<Rank>& expected,
                  const std::string& name) {
  if (view.shape() != expected)
    VITC_THROW(ShapeError(name + ": expected shape " + detail::shape_string(expected) + ", got " +
                          detail::shape_string(view.shape())));
}

}  // namespace vitc
