// SPDX-License-Identifier: Apache-2.0
#pragma once
// Reads a tensor of a SafetensorsReader as its natural C++ type (and as float or double where the
// reader converts), whatever its dtype and rank; shared by the fuzz target and the corpus test.
// Returns a checksum of the elements so that the reads cannot be optimised away. Rank 0 and ranks
// above 4 are not read (there is no Tensor of that rank to read into).

#include <cstdint>
#include <cstring>

#include "vitcompress/io/safetensors.hpp"

namespace vitc_fuzz {

template <class T>
std::uint64_t checksum(const T* data, vitc::Index n) {
  std::uint64_t sum = 0;
  for (vitc::Index i = 0; i < n; ++i) {
    unsigned char raw[sizeof(T)];
    std::memcpy(raw, &data[i], sizeof(T));
    for (unsigned char c : raw) sum = sum * 31 + c;
  }
  return sum;
}

template <class T>
std::uint64_t read_as(const vitc::io::SafetensorsReader& r, const vitc::io::TensorInfo& t) {
  switch (t.shape.size()) {
    case 1: {
      const auto x = r.read<T, 1>(t.name);
      return checksum(x.data(), x.size());
    }
    case 2: {
      const auto x = r.read<T, 2>(t.name);
      return checksum(x.data(), x.size());
    }
    case 3: {
      const auto x = r.read<T, 3>(t.name);
      return checksum(x.data(), x.size());
    }
    case 4: {
      const auto x = r.read<T, 4>(t.name);
      return checksum(x.data(), x.size());
    }
    default:
      return 0;
  }
}

template <class T>
std::uint64_t view_as(const vitc::io::SafetensorsReader& r, const vitc::io::TensorInfo& t) {
  switch (t.shape.size()) {
    case 1: {
      const auto x = r.view<T, 1>(t.name);
      return checksum(x.data(), x.size());
    }
    case 2: {
      const auto x = r.view<T, 2>(t.name);
      return checksum(x.data(), x.size());
    }
    case 3: {
      const auto x = r.view<T, 3>(t.name);
      return checksum(x.data(), x.size());
    }
    case 4: {
      const auto x = r.view<T, 4>(t.name);
      return checksum(x.data(), x.size());
    }
    default:
      return 0;
  }
}

// read() as the natural type, plus float/double where the dtype converts.
inline std::uint64_t read_natural(const vitc::io::SafetensorsReader& r,
                                  const vitc::io::TensorInfo& t) {
  using vitc::io::DType;
  switch (t.dtype) {
    case DType::kBool:
      return read_as<bool>(r, t);
    case DType::kU8:
      return read_as<std::uint8_t>(r, t);
    case DType::kI8:
      return read_as<std::int8_t>(r, t);
    case DType::kI16:
      return read_as<std::int16_t>(r, t);
    case DType::kU16:
      return read_as<std::uint16_t>(r, t);
    case DType::kF16:
    case DType::kBF16:
      return read_as<float>(r, t);
    case DType::kI32:
      return read_as<std::int32_t>(r, t);
    case DType::kU32:
      return read_as<std::uint32_t>(r, t);
    case DType::kF32:
      return read_as<float>(r, t) + read_as<double>(r, t);
    case DType::kF64:
      return read_as<double>(r, t);
    case DType::kI64:
      return read_as<std::int64_t>(r, t);
    case DType::kU64:
      return read_as<std::uint64_t>(r, t);
  }
  return 0;
}

// view() as the natural type (F16 and BF16 have none).
inline std::uint64_t view_natural(const vitc::io::SafetensorsReader& r,
                                  const vitc::io::TensorInfo& t) {
  using vitc::io::DType;
  switch (t.dtype) {
    case DType::kBool:
      return view_as<bool>(r, t);
    case DType::kU8:
      return view_as<std::uint8_t>(r, t);
    case DType::kI8:
      return view_as<std::int8_t>(r, t);
    case DType::kI16:
      return view_as<std::int16_t>(r, t);
    case DType::kU16:
      return view_as<std::uint16_t>(r, t);
    case DType::kF16:
    case DType::kBF16:
      return 0;
    case DType::kI32:
      return view_as<std::int32_t>(r, t);
    case DType::kU32:
      return view_as<std::uint32_t>(r, t);
    case DType::kF32:
      return view_as<float>(r, t);
    case DType::kF64:
      return view_as<double>(r, t);
    case DType::kI64:
      return view_as<std::int64_t>(r, t);
    case DType::kU64:
      return view_as<std::uint64_t>(r, t);
  }
  return 0;
}

}  // namespace vitc_fuzz
