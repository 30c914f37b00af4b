// SPDX-License-Identifier: Apache-2.0
#pragma once
// Shared helpers of the integer nonlinear kernel tests (softmax, layernorm, gelu).

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"

namespace vitc_test {

// Whether tag T can run here; prints why not (a missing ISA is a message, not a failure).
template <class T>
bool arch_runs() {
  if (T::available()) return true;
  MESSAGE("skipping arch '" << std::string(T::kName) << "': not available on this build or CPU");
  return false;
}

// A rows×cols matrix stored at `offset` elements past an aligned start, with row stride
// cols + pad: exercises unaligned pointers and strided rows.
template <class T>
struct Strided {
  std::vector<T> storage;
  vitc::Index rows = 0, cols = 0, stride = 0, offset = 0;
  Strided(vitc::Index r, vitc::Index c, vitc::Index pad, vitc::Index off, T fill = T{})
      : storage(static_cast<std::size_t>(off + r * (c + pad) + 64), fill),
        rows(r),
        cols(c),
        stride(c + pad),
        offset(off) {}
  T* row(vitc::Index r) { return storage.data() + offset + r * stride; }
  const T* row(vitc::Index r) const { return storage.data() + offset + r * stride; }
  vitc::TensorView<T, 2> view() { return {storage.data() + offset, {rows, cols}, {stride, 1}}; }
  vitc::TensorView<const T, 2> cview() const {
    return {storage.data() + offset, {rows, cols}, {stride, 1}};
  }
};

// Index of the first differing element of two equally shaped matrices, or -1.
template <class T>
vitc::Index first_mismatch(const Strided<T>& a, const Strided<T>& b) {
  for (vitc::Index r = 0; r < a.rows; ++r)
    for (vitc::Index c = 0; c < a.cols; ++c)
      if (a.row(r)[c] != b.row(r)[c]) return r * a.cols + c;
  return -1;
}

}  // namespace vitc_test
