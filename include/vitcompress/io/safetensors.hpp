// SPDX-License-Identifier: Apache-2.0
#pragma once
// safetensors: the checkpoint format every stage reads and writes.
//
// The format (huggingface/safetensors, README "Format" and safetensors/src/tensor.rs) is
//
//   [8 bytes]  N, the header length, an unsigned 64-bit little-endian integer
//   [N bytes]  a UTF-8 JSON object: {"NAME": {"dtype": "F32", "shape": [2, 3],
//              "data_offsets": [BEGIN, END]}, ..., "__metadata__": {"key": "value", ...}}
//   [rest]     the data area: every tensor's elements, row-major, little-endian, no strides.
//
// BEGIN and END are byte offsets into the data area, END exclusive. Scalars (shape []) and empty
// tensors (an extent of 0, BEGIN == END) are valid. The optional "__metadata__" maps strings to
// strings; it is where our quantization parameters are named.
//
// Reading validates the whole header once, on open, so that every later call is safe. A file
// breaking any of these rules gets a vitc::FormatError whose message names the file (or
// "safetensors buffer") and the tensor or field at fault:
//   - at least 8 bytes; 0 < N <= 100,000,000 (the reference limit); 8 + N within the file;
//   - the header is valid UTF-8 and one JSON object (trailing spaces allowed: writers pad with
//     them), with no duplicate key at any level (nlohmann::json would keep the last one silently),
//     no NUL byte and no byte-order mark (nlohmann's parser stops at the first and skips the
//     second, where serde_json, the reference's parser, refuses both);
//   - each tensor entry is an object with exactly the keys dtype, shape, data_offsets; dtype one of
//     the names below; shape an array of non-negative integers; data_offsets two non-negative
//     integers with BEGIN <= END;
//   - the element count times the dtype size does not overflow (checked multiplication, so hostile
//     shapes like [2^62, 2^62] are refused), and END - BEGIN equals that byte size;
//   - sorted by offset, the tensors tile the data area exactly: no overlap, no gap, nothing outside
//     it and no trailing byte, as the reference reader demands;
//   - "__metadata__", if present and not null, is an object of string values.
// We are stricter than the reference reader in three places: it ignores unknown keys in a tensor
// entry; it may let a duplicate key through (the README forbids them, but its serde maps keep one
// silently); and it accepts a shape like [0, 2^40, 2^40] whose non-zero extents multiply past
// 2^63, which our Index cannot hold. Newer dtypes (F8_*, F4, F6_*) are refused as unknown. Element
// values are not checked (NaN and inf are legal), except that BOOL bytes must be 0 or 1 when read
// as bool: any other value would be undefined behaviour in C++.
//
// SafetensorsReader keeps the bytes alive (its own mmap or vector) or borrows them (from_buffer),
// and hands out spans into them: info() and tensors() are free; read() copies into an owning
// Tensor, converting F16/BF16 to float and F32 to double; view() is zero-copy and requires the
// exact dtype and an address aligned for the element type. Every const method is safe to call
// from several threads at once.
//
// SafetensorsWriter collects copies of tensors and writes what the reference writer writes: the
// header compact, "__metadata__" first and only when non-empty, tensors ordered by descending dtype
// alignment (the enum order below, reversed) then by name, data contiguous in that order, the
// header padded with spaces to a multiple of 8 bytes, so that every tensor starts at a multiple of
// its element size; metadata keys in sorted order (the reference's map has none). write()
// goes through a temporary file in the target directory and a rename, so a failed write never
// leaves a truncated checkpoint behind.
//
// The byte order of tensor data is little-endian; this header assumes a little-endian host.

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/float16.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/io/detail/mapped_file.hpp"

namespace vitc::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");
static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "F32 and F64 are IEEE 754 binary32 and binary64");

// Element types, in the reference's order of increasing alignment (the writer relies on it).
enum class DType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

inline constexpr DType kAllDTypes[] = {
    DType::kBool, DType::kU8,  DType::kI8,  DType::kI16, DType::kU16, DType::kF16, DType::kBF16,
    DType::kI32,  DType::kU32, DType::kF32, DType::kF64, DType::kI64, DType::kU64};

// The name used in the header: "BOOL", "U8", ..., "F32".
constexpr std::string_view dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::kBool:
      return "BOOL";
    case DType::kU8:
      return "U8";
    case DType::kI8:
      return "I8";
    case DType::kI16:
      return "I16";
    case DType::kU16:
      return "U16";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kU32:
      return "U32";
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kI64:
      return "I64";
    case DType::kU64:
      return "U64";
  }
  return "?";
}

// Bytes per element.
constexpr std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::kBool:
    case DType::kU8:
    case DType::kI8:
      return 1;
    case DType::kI16:
    case DType::kU16:
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI32:
    case DType::kU32:
    case DType::kF32:
      return 4;
    case DType::kF64:
    case DType::kI64:
    case DType::kU64:
      return 8;
  }
  return 0;
}

// The dtype named `name` (exact, case-sensitive), or nothing.
constexpr std::optional<DType> find_dtype(std::string_view name) noexcept {
  for (DType d : kAllDTypes)
    if (dtype_name(d) == name) return d;
  return std::nullopt;
}

// The dtype named `name` (exact, case-sensitive); FormatError if there is none.
inline DType parse_dtype(std::string_view name) {
  if (const auto d = find_dtype(name)) return *d;
  VITC_THROW(FormatError("unknown dtype '" + std::string(name) + "'"));
}

namespace detail {
template <class T>
inline constexpr bool kAlwaysFalse = false;
template <class T>
inline constexpr bool kIsCharacter =
    std::is_same_v<T, char> || std::is_same_v<T, wchar_t> || std::is_same_v<T, char8_t> ||
    std::is_same_v<T, char16_t> || std::is_same_v<T, char32_t>;
}  // namespace detail

// The dtype that stores C++ elements of type T: bool, the fixed-width integers (by size and
// signedness), float and double. F16 and BF16 have no C++ type: read them as float, write them
// with SafetensorsWriter::add_as_f16/add_as_bf16.
template <class T>
constexpr DType dtype_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, bool>) {
    return DType::kBool;
  } else if constexpr (std::is_same_v<U, float>) {
    return DType::kF32;
  } else if constexpr (std::is_same_v<U, double>) {
    return DType::kF64;
  } else if constexpr (std::is_integral_v<U> && !detail::kIsCharacter<U> && sizeof(U) <= 8) {
    constexpr bool s = std::is_signed_v<U>;
    if constexpr (sizeof(U) == 1) return s ? DType::kI8 : DType::kU8;
    if constexpr (sizeof(U) == 2) return s ? DType::kI16 : DType::kU16;
    if constexpr (sizeof(U) == 4) return s ? DType::kI32 : DType::kU32;
    if constexpr (sizeof(U) == 8) return s ? DType::kI64 : DType::kU64;
  } else {
    static_assert(detail::kAlwaysFalse<T>,
                  "no safetensors dtype for this element type (use bool, a fixed-width integer, "
                  "float or double)");
  }
}

// One tensor of a file, as its header describes it. `bytes` points into the reader's storage.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<Index> shape;  // empty for a scalar
  std::span<const std::byte> bytes;

  [[nodiscard]] Index element_count() const noexcept {
    Index n = 1;
    for (Index e : shape) n *= e;
    return n;
  }
};

namespace detail {

// The largest header the reference reader accepts.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

inline std::string shape_string(const std::vector<Index>& shape) {
  std::string s = "[";
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (d) s += ", ";
    s += std::to_string(shape[d]);
  }
  return s + "]";
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as Rust's from_utf8.
inline bool is_valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return false;
    }
    if (n - i < len) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xbf) return false;
    i += len;
  }
  return true;
}

// a * b, or false on overflow of 64 bits.
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
  return !__builtin_mul_overflow(a, b, &out);
}

// The byte size of a tensor of non-negative extents `shape`, or nothing on overflow. The element
// count is multiplied left to right with checks, as the reference does; on top of that the
// product of the non-zero extents must fit an Index, or our tensors could not describe the shape.
inline std::optional<std::uint64_t> byte_size(const std::vector<Index>& shape,
                                              DType dtype) noexcept {
  std::uint64_t count = 1, nonzero = 1, bytes = 0;
  for (Index extent : shape) {
    const auto e = static_cast<std::uint64_t>(extent);
    if (!checked_mul(count, e, count)) return std::nullopt;
    if (e != 0 && (!checked_mul(nonzero, e, nonzero) ||
                   nonzero > static_cast<std::uint64_t>(std::numeric_limits<Index>::max())))
      return std::nullopt;
  }
  if (!checked_mul(count, dtype_size(dtype), bytes)) return std::nullopt;
  return bytes;
}

template <class T, std::size_t Rank, class F>
void for_each_element(const TensorView<T, Rank>& view, F&& f) {
  for (Index i = 0; i < view.extent(0); ++i) {
    if constexpr (Rank == 1)
      f(view(i));
    else
      for_each_element(view[i], f);
  }
}

// Reads the little-endian element i of type U from unaligned bytes.
template <class U>
U load_element(const std::byte* base, Index i) noexcept {
  U value;
  std::memcpy(&value, base + static_cast<std::size_t>(i) * sizeof(U), sizeof(U));
  return value;
}

}  // namespace detail

class SafetensorsReader {
 public:
  // Memory-maps the file read-only. IoError (naming the path) if it cannot be opened or mapped;
  // FormatError (naming the path and the tensor or field) if it breaks a rule above.
  static SafetensorsReader open(const std::filesystem::path& path) {
    SafetensorsReader reader;
    reader.source_ = "safetensors file '" + path.string() + "'";
    auto file = detail::MappedFile::open(path, "safetensors file");
    const auto bytes = file.bytes();
    reader.storage_ = std::move(file);
    reader.parse(bytes);
    return reader;
  }

  // Reads a file held in memory. The caller keeps `bytes` alive as long as the reader and every
  // span or view obtained from it.
  static SafetensorsReader from_buffer(std::span<const std::byte> bytes) {
    SafetensorsReader reader;
    reader.source_ = "safetensors buffer";
    reader.parse(bytes);
    return reader;
  }

  // A temporary vector would die before the reader: pass it to from_bytes() instead.
  static SafetensorsReader from_buffer(std::vector<std::byte>&&) = delete;

  // Reads a file held in memory, taking ownership of it.
  static SafetensorsReader from_bytes(std::vector<std::byte> bytes) {
    SafetensorsReader reader;
    reader.source_ = "safetensors buffer";
    auto& owned = reader.storage_.emplace<std::vector<std::byte>>(std::move(bytes));
    reader.parse(owned);
    return reader;
  }

  SafetensorsReader(SafetensorsReader&&) noexcept = default;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept = default;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;
  ~SafetensorsReader() = default;

  // Every tensor, in file order (ascending data offset; ties between empty tensors by name).
  [[nodiscard]] const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }

  [[nodiscard]] bool contains(std::string_view name) const { return index_.contains(name); }

  // The tensor called `name`; FormatError "... tensor 'NAME' not found" if there is none.
  [[nodiscard]] const TensorInfo& info(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end())
      VITC_THROW(FormatError(source_ + ": tensor '" + std::string(name) + "' not found"));
    return tensors_[it->second];
  }

  // The "__metadata__" map (empty if the file has none).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept {
    return metadata_;
  }

  // Where the tensors come from, as error messages name it: "safetensors file '<path>'" or
  // "safetensors buffer".
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  // A copy of tensor `name` as a Tensor<T, Rank>. T = float accepts F32, and F16/BF16 (converted
  // exactly); T = double accepts F64 and F32; every other T needs exactly dtype_of<T>(). A dtype
  // mismatch throws FormatError, a rank mismatch ShapeError; both name the tensor, the expected
  // and the actual dtype or shape.
  template <class T, std::size_t Rank>
  [[nodiscard]] Tensor<T, Rank> read(std::string_view name) const {
    static_assert(!std::is_const_v<T>, "read a Tensor<T>, not Tensor<const T>");
    const TensorInfo& t = info(name);
    const Shape<Rank> shape = checked_shape<Rank>(t);
    const DType want = dtype_of<T>();
    bool accepted = t.dtype == want;
    if constexpr (std::is_same_v<T, float>)
      accepted = accepted || t.dtype == DType::kF16 || t.dtype == DType::kBF16;
    if constexpr (std::is_same_v<T, double>) accepted = accepted || t.dtype == DType::kF32;
    if (!accepted) {
      std::string expected(dtype_name(want));
      if constexpr (std::is_same_v<T, float>) expected = "F32, F16 or BF16";
      if constexpr (std::is_same_v<T, double>) expected = "F64 or F32";
      VITC_THROW(FormatError(source_ + ": tensor '" + t.name + "' has dtype " +
                             std::string(dtype_name(t.dtype)) + ", expected " + expected));
    }
    if constexpr (std::is_same_v<T, bool>) check_bool_bytes(t);

    Tensor<T, Rank> out(shape);
    const std::byte* src = t.bytes.data();
    const Index n = out.size();
    if (t.dtype == want) {
      if (n > 0) std::memcpy(static_cast<void*>(out.data()), src, t.bytes.size());
    } else if constexpr (std::is_same_v<T, float>) {
      T* dst = out.data();
      if (t.dtype == DType::kF16)
        for (Index i = 0; i < n; ++i)
          dst[i] = half_bits_to_float(detail::load_element<std::uint16_t>(src, i));
      else
        for (Index i = 0; i < n; ++i)
          dst[i] = bf16_bits_to_float(detail::load_element<std::uint16_t>(src, i));
    } else if constexpr (std::is_same_v<T, double>) {
      T* dst = out.data();
      for (Index i = 0; i < n; ++i) dst[i] = detail::load_element<float>(src, i);
    }
    return out;
  }

  // A zero-copy view of tensor `name` (valid while the reader and its bytes live). The dtype must
  // be exactly dtype_of<T>() and the data aligned to alignof(T) in memory (true of files from a
  // reference writer, whose offsets are multiples of the element size, when the buffer itself is
  // 8-aligned, as mmap and from_bytes are). FormatError otherwise, ShapeError on a rank mismatch.
  template <class T, std::size_t Rank>
  [[nodiscard]] TensorView<const T, Rank> view(std::string_view name) const {
    using U = std::remove_const_t<T>;
    const TensorInfo& t = info(name);
    const Shape<Rank> shape = checked_shape<Rank>(t);
    if (t.dtype != dtype_of<U>())
      VITC_THROW(FormatError(source_ + ": tensor '" + t.name + "' has dtype " +
                             std::string(dtype_name(t.dtype)) + ", expected " +
                             std::string(dtype_name(dtype_of<U>())) + " for a zero-copy view"));
    if (!t.bytes.empty() && reinterpret_cast<std::uintptr_t>(t.bytes.data()) % alignof(U) != 0)
      VITC_THROW(FormatError(source_ + ": tensor '" + t.name + "' is not aligned to " +
                             std::to_string(alignof(U)) +
                             " bytes in memory; read() it instead of viewing it"));
    if constexpr (std::is_same_v<U, bool>) check_bool_bytes(t);
    return TensorView<const T, Rank>(reinterpret_cast<const U*>(t.bytes.data()), shape);
  }

 private:
  SafetensorsReader() = default;

  template <std::size_t Rank>
  Shape<Rank> checked_shape(const TensorInfo& t) const {
    if (t.shape.size() != Rank)
      VITC_THROW(ShapeError(
          source_ + ": tensor '" + t.name + "' has shape " + detail::shape_string(t.shape) +
          " (rank " + std::to_string(t.shape.size()) + "), expected rank " + std::to_string(Rank)));
    Shape<Rank> shape{};
    std::copy(t.shape.begin(), t.shape.end(), shape.begin());
    return shape;
  }

  void check_bool_bytes(const TensorInfo& t) const {
    for (std::size_t i = 0; i < t.bytes.size(); ++i)
      if (static_cast<unsigned char>(t.bytes[i]) > 1)
        VITC_THROW(FormatError(source_ + ": tensor '" + t.name + "' (BOOL) holds the byte " +
                               std::to_string(static_cast<unsigned>(t.bytes[i])) + " at element " +
                               std::to_string(i) + "; only 0 and 1 are booleans"));
  }

  [[noreturn]] void fail(const std::string& what) const {
    VITC_THROW(FormatError(source_ + ": " + what));
  }

  using Json = nlohmann::json;

  // A non-negative JSON integer, or fail naming `field`.
  std::uint64_t get_unsigned(const Json& value, const std::string& field) const {
    if (value.is_number_unsigned()) return value.get<std::uint64_t>();
    if (value.is_number_integer()) {
      if (value.get<std::int64_t>() >= 0)
        return static_cast<std::uint64_t>(value.get<std::int64_t>());
      fail(field + " is negative (" + value.dump() + ")");
    }
    fail(field + " is not an integer (found " + std::string(value.type_name()) +
         (value.is_number() ? " " + value.dump() : std::string()) + ")");
  }

  void parse(std::span<const std::byte> file) {
    if (file.size() < 8)
      fail("shorter than 8 bytes (" + std::to_string(file.size()) + "), no header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(file[i]);
    if (n == 0) fail("header length is 0");
    if (n > detail::kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " +
           std::to_string(detail::kMaxHeaderBytes) + " bytes");
    if (n > file.size() - 8)
      fail("header length " + std::to_string(n) + " runs past the end of the file (" +
           std::to_string(file.size()) + " bytes)");
    const std::string_view header(reinterpret_cast<const char*>(file.data() + 8),
                                  static_cast<std::size_t>(n));
    const std::span<const std::byte> data = file.subspan(8 + static_cast<std::size_t>(n));
    if (!detail::is_valid_utf8(header)) fail("header is not valid UTF-8");
    // No JSON text holds a raw NUL, but nlohmann's parser stops at one as if the input ended, and
    // would accept "{}\0garbage".
    if (header.find('\0') != std::string_view::npos) fail("header contains a NUL byte");
    // nlohmann also skips a leading UTF-8 byte-order mark, which the reference (serde_json)
    // refuses.
    if (header.starts_with("\xEF\xBB\xBF")) fail("header starts with a UTF-8 byte-order mark");

    const Json root = parse_json(header);
    if (!root.is_object())
      fail("header is not a JSON object (found " + std::string(root.type_name()) + ")");

    struct Entry {
      std::string name;
      DType dtype;
      std::vector<Index> shape;
      std::uint64_t begin, end;
    };
    std::vector<Entry> entries;
    entries.reserve(root.size());
    for (const auto& [key, value] : root.items()) {
      if (key == "__metadata__") {
        parse_metadata(value);
        continue;
      }
      const std::string where = "tensor '" + key + "'";
      if (!value.is_object())
        fail(where + " is not a JSON object (found " + value.type_name() + ")");
      for (const auto& [field, _] : value.items())
        if (field != "dtype" && field != "shape" && field != "data_offsets")
          fail(where + ": unexpected field '" + field + "'");
      for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!value.contains(field)) fail(where + ": missing field '" + field + "'");

      Entry e;
      e.name = key;
      const Json& dtype = value["dtype"];
      if (!dtype.is_string()) fail(where + ": dtype is not a string");
      const auto found = find_dtype(dtype.get_ref<const std::string&>());
      if (!found) fail(where + ": unknown dtype " + dtype.dump());
      e.dtype = *found;

      const Json& shape = value["shape"];
      if (!shape.is_array()) fail(where + ": shape is not an array");
      for (std::size_t d = 0; d < shape.size(); ++d) {
        const std::uint64_t extent =
            get_unsigned(shape[d], where + ": shape[" + std::to_string(d) + "]");
        if (extent > static_cast<std::uint64_t>(std::numeric_limits<Index>::max()))
          fail(where + ": shape[" + std::to_string(d) + "] = " + std::to_string(extent) +
               " does not fit a signed 64-bit index");
        e.shape.push_back(static_cast<Index>(extent));
      }
      const auto byte_size = detail::byte_size(e.shape, e.dtype);
      if (!byte_size)
        fail(where + ": shape " + detail::shape_string(e.shape) + " of " +
             std::string(dtype_name(e.dtype)) + " overflows 64 bits");

      const Json& offsets = value["data_offsets"];
      if (!offsets.is_array() || offsets.size() != 2)
        fail(where + ": data_offsets is not an array of two integers [BEGIN, END]");
      e.begin = get_unsigned(offsets[0], where + ": data_offsets[0]");
      e.end = get_unsigned(offsets[1], where + ": data_offsets[1]");
      const std::string offsets_string =
          "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
      if (e.end < e.begin) fail(where + ": " + offsets_string + " end before they begin");
      if (e.end - e.begin != *byte_size)
        fail(where + ": " + offsets_string + " hold " + std::to_string(e.end - e.begin) +
             " bytes, but dtype " + std::string(dtype_name(e.dtype)) + " and shape " +
             detail::shape_string(e.shape) + " need " + std::to_string(*byte_size));
      if (e.end > data.size())
        fail(where + ": " + offsets_string + " lie outside the data area of " +
             std::to_string(data.size()) + " bytes");
      entries.push_back(std::move(e));
    }

    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      if (a.begin != b.begin) return a.begin < b.begin;
      if (a.end != b.end) return a.end < b.end;
      return a.name < b.name;
    });
    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const Entry& e = entries[i];
      if (e.begin < covered)
        fail("tensor '" + e.name + "' (data_offsets [" + std::to_string(e.begin) + ", " +
             std::to_string(e.end) + "]) overlaps tensor '" + entries[i - 1].name + "'");
      if (e.begin > covered)
        fail("gap of " + std::to_string(e.begin - covered) +
             " bytes in the data area before tensor '" + e.name + "'");
      covered = e.end;
    }
    if (covered != data.size())
      fail(std::to_string(data.size() - covered) + " bytes after the last tensor" +
           (entries.empty() ? std::string() : " '" + entries.back().name + "'") +
           " are not covered by any tensor");

    tensors_.reserve(entries.size());
    for (Entry& e : entries) {
      const auto begin = static_cast<std::size_t>(e.begin);
      index_.emplace(e.name, tensors_.size());
      tensors_.push_back(TensorInfo{std::move(e.name), e.dtype, std::move(e.shape),
                                    data.subspan(begin, static_cast<std::size_t>(e.end) - begin)});
    }
  }

  // Parses the header, refusing duplicate keys at any depth.
  Json parse_json(std::string_view header) const {
    std::vector<std::set<std::string, std::less<>>> open_objects;
    std::string duplicate;
    const Json::parser_callback_t on_event = [&](int, Json::parse_event_t event, Json& parsed) {
      switch (event) {
        case Json::parse_event_t::object_start:
          open_objects.emplace_back();
          break;
        case Json::parse_event_t::object_end:
          open_objects.pop_back();
          break;
        case Json::parse_event_t::key: {
          const auto& key = parsed.get_ref<const std::string&>();
          if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
          break;
        }
        default:
          break;
      }
      return true;
    };
    Json root;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
      root = Json::parse(header.begin(), header.end(), on_event);
    } catch (const Json::exception& error) {
      fail(std::string("header is not valid JSON: ") + error.what());
    }
#else
    root = Json::parse(header.begin(), header.end(), on_event, /*allow_exceptions=*/false);
    if (root.is_discarded()) fail("header is not valid JSON");
#endif
    if (!duplicate.empty()) fail("duplicate key '" + duplicate + "' in the header");
    return root;
  }

  void parse_metadata(const Json& value) {
    if (value.is_null()) return;  // the reference reads "__metadata__": null as no metadata
    if (!value.is_object())
      fail("__metadata__ is not a JSON object (found " + std::string(value.type_name()) + ")");
    for (const auto& [key, item] : value.items()) {
      if (!item.is_string())
        fail("__metadata__ field '" + key + "' is not a string (found " + item.type_name() + ")");
      metadata_.emplace(key, item.get<std::string>());
    }
  }

  std::variant<std::monostate, std::vector<std::byte>, detail::MappedFile> storage_;
  std::string source_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // Adds a copy of `view` (any strides) under `name`, as dtype_of<T>().
  template <class T, std::size_t Rank>
  void add(std::string name, TensorView<const T, Rank> view) {
    using U = std::remove_const_t<T>;
    Entry& e = new_entry(std::move(name), dtype_of<U>(), shape_of(view));
    if (view.empty()) return;
    std::byte* out = e.bytes.data();
    if (view.is_contiguous()) {
      std::memcpy(out, view.data(), e.bytes.size());
      return;
    }
    detail::for_each_element(view, [&out](const U& x) {
      std::memcpy(out, &x, sizeof(U));
      out += sizeof(U);
    });
  }
  template <class T, std::size_t Rank>
  requires(!std::is_const_v<T>) void add(std::string name, TensorView<T, Rank> view) {
    add(std::move(name), TensorView<const T, Rank>(view));
  }
  template <class T, std::size_t Rank>
  void add(std::string name, const Tensor<T, Rank>& tensor) {
    add(std::move(name), tensor.view());
  }

  // Adds float data stored as F16 or BF16 (round to nearest even; see core/float16.hpp).
  template <std::size_t Rank>
  void add_as_f16(std::string name, TensorView<const float, Rank> view) {
    add_converted(std::move(name), DType::kF16, view,
                  [](float x) { return float_to_half_bits(x); });
  }
  template <std::size_t Rank>
  void add_as_f16(std::string name, TensorView<float, Rank> view) {
    add_as_f16(std::move(name), TensorView<const float, Rank>(view));
  }
  template <std::size_t Rank>
  void add_as_f16(std::string name, const Tensor<float, Rank>& tensor) {
    add_as_f16(std::move(name), tensor.view());
  }
  template <std::size_t Rank>
  void add_as_bf16(std::string name, TensorView<const float, Rank> view) {
    add_converted(std::move(name), DType::kBF16, view,
                  [](float x) { return float_to_bf16_bits(x); });
  }
  template <std::size_t Rank>
  void add_as_bf16(std::string name, TensorView<float, Rank> view) {
    add_as_bf16(std::move(name), TensorView<const float, Rank>(view));
  }
  template <std::size_t Rank>
  void add_as_bf16(std::string name, const Tensor<float, Rank>& tensor) {
    add_as_bf16(std::move(name), tensor.view());
  }

  // Adds raw little-endian bytes of the given dtype and shape (shape {} is a scalar).
  // ArgumentError unless bytes.size() == product(shape) * dtype_size(dtype).
  void add_raw(std::string name, DType dtype, std::vector<Index> shape,
               std::span<const std::byte> bytes) {
    const std::string where = "safetensors writer: tensor '" + name + "'";
    for (std::size_t d = 0; d < shape.size(); ++d)
      if (shape[d] < 0)
        VITC_THROW(
            ArgumentError(where + ": negative extent in shape " + detail::shape_string(shape)));
    const auto byte_size = detail::byte_size(shape, dtype);
    if (!byte_size || *byte_size != bytes.size())
      VITC_THROW(ArgumentError(
          where + ": " + std::to_string(bytes.size()) + " bytes given, but " +
          std::string(dtype_name(dtype)) + " of shape " + detail::shape_string(shape) + " needs " +
          (byte_size ? std::to_string(*byte_size) : std::string("more than 2^63"))));
    Entry& e = new_entry(std::move(name), dtype, std::move(shape));
    if (!bytes.empty()) std::memcpy(e.bytes.data(), bytes.data(), bytes.size());
  }

  // Sets (or replaces) one "__metadata__" entry.
  void set_metadata(std::string key, std::string value) {
    if (!detail::is_valid_utf8(key) || !detail::is_valid_utf8(value))
      VITC_THROW(ArgumentError("safetensors writer: metadata '" + key + "' is not valid UTF-8"));
    metadata_[std::move(key)] = std::move(value);
  }

  [[nodiscard]] bool contains(std::string_view name) const { return names_.contains(name); }
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }

  // The whole file in memory.
  [[nodiscard]] std::vector<std::byte> serialize() const {
    const std::vector<const Entry*> order = ordered();
    const std::string header = make_header(order);
    std::vector<std::byte> out(8 + header.size());
    encode_length(header.size(), out.data());
    std::memcpy(out.data() + 8, header.data(), header.size());
    for (const Entry* e : order) out.insert(out.end(), e->bytes.begin(), e->bytes.end());
    return out;
  }

  // Writes the file: a temporary file in the same directory, flushed to disk, then renamed over
  // `path`. IoError naming the path on failure, and no file is left behind.
  void write(const std::filesystem::path& path) const {
    const std::vector<const Entry*> order = ordered();
    const std::string header = make_header(order);
    std::byte length[8];
    encode_length(header.size(), length);

    const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
    auto io_fail = [&](const std::string& what, int error) {
      VITC_THROW(IoError("cannot write safetensors file '" + path.string() + "': " + what +
                         (error ? std::string(": ") + std::strerror(error) : std::string())));
    };
    if (!path.has_filename()) io_fail("the path names no file", 0);

    // A fresh temporary name; O_EXCL makes collisions (and symlink tricks) fail, and we retry.
    std::random_device entropy;
    std::filesystem::path tmp;
    int fd = -1;
    for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
      char suffix[32];
      std::snprintf(suffix, sizeof suffix, ".tmp-%d-%08x", static_cast<int>(::getpid()),
                    static_cast<unsigned>(entropy()));
      std::string name = path.filename().string();
      name.insert(0, 1, '.');  // (built in steps: GCC 12 warns falsely on "." + string)
      name += suffix;
      tmp = dir / name;
      fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) io_fail("cannot create a temporary file in '" + dir.string() + "'", errno);

    auto write_all = [&](const void* p, std::size_t n) {
      const auto* bytes = static_cast<const char*>(p);
      while (n > 0) {
        const ::ssize_t w = ::write(fd, bytes, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        bytes += w;
        n -= static_cast<std::size_t>(w);
      }
      return true;
    };
    bool ok = write_all(length, 8) && write_all(header.data(), header.size());
    for (const Entry* e : order) {
      if (!ok) break;
      ok = write_all(e->bytes.data(), e->bytes.size());
    }
    int error = ok ? 0 : errno;
    if (ok && ::fsync(fd) != 0) {
      ok = false;
      error = errno;
    }
    if (::close(fd) != 0 && ok) {
      ok = false;
      error = errno;
    }
    if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
      ok = false;
      error = errno;
    }
    if (!ok) {
      ::unlink(tmp.c_str());
      io_fail("write failed", error);
    }
    // Make the rename itself durable; failure here does not lose the data, so it is not an error.
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
      ::fsync(dir_fd);
      ::close(dir_fd);
    }
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<Index> shape;
    std::vector<std::byte> bytes;
  };

  template <class T, std::size_t Rank>
  static std::vector<Index> shape_of(const TensorView<T, Rank>& view) {
    return std::vector<Index>(view.shape().begin(), view.shape().end());
  }

  Entry& new_entry(std::string name, DType dtype, std::vector<Index> shape) {
    if (name == "__metadata__")
      VITC_THROW(
          ArgumentError("safetensors writer: '__metadata__' is reserved, not a tensor name"));
    if (!detail::is_valid_utf8(name))
      VITC_THROW(
          ArgumentError("safetensors writer: tensor name '" + name + "' is not valid UTF-8"));
    if (contains(name))
      VITC_THROW(ArgumentError("safetensors writer: duplicate tensor name '" + name + "'"));
    Index count = 1;
    for (Index e : shape) count *= e;  // validated by the caller or by TensorView
    Entry e{std::move(name), dtype, std::move(shape), {}};
    e.bytes.resize(static_cast<std::size_t>(count) * dtype_size(dtype));
    entries_.push_back(std::move(e));
    names_.insert(entries_.back().name);
    return entries_.back();
  }

  template <std::size_t Rank, class Convert>
  void add_converted(std::string name, DType dtype, TensorView<const float, Rank> view,
                     Convert convert) {
    Entry& e = new_entry(std::move(name), dtype, shape_of(view));
    std::byte* out = e.bytes.data();
    detail::for_each_element(view, [&](float x) {
      const std::uint16_t bits = convert(x);
      std::memcpy(out, &bits, 2);
      out += 2;
    });
  }

  // Descending dtype alignment (the reverse of the enum order), then name, byte-wise.
  std::vector<const Entry*> ordered() const {
    std::vector<const Entry*> order;
    order.reserve(entries_.size());
    for (const Entry& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      if (a->dtype != b->dtype) return a->dtype > b->dtype;
      return a->name < b->name;
    });
    return order;
  }

  static std::string json_string(const std::string& s) { return nlohmann::json(s).dump(); }

  std::string make_header(const std::vector<const Entry*>& order) const {
    std::string h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [key, value] : metadata_) {
        if (!first) h += ',';
        first = false;
        h += json_string(key) + ':' + json_string(value);
      }
      h += '}';
    }
    std::uint64_t offset = 0;
    for (const Entry* e : order) {
      if (h.size() > 1) h += ',';
      h += json_string(e->name) + ":{\"dtype\":\"" + std::string(dtype_name(e->dtype)) +
           "\",\"shape\":[";
      for (std::size_t d = 0; d < e->shape.size(); ++d) {
        if (d) h += ',';
        h += std::to_string(e->shape[d]);
      }
      const std::uint64_t end = offset + e->bytes.size();
      h += "],\"data_offsets\":[" + std::to_string(offset) + ',' + std::to_string(end) + "]}";
      offset = end;
    }
    h += '}';
    h.append((8 - h.size() % 8) % 8, ' ');
    if (h.size() > detail::kMaxHeaderBytes)
      VITC_THROW(ArgumentError("safetensors writer: the header would be " +
                               std::to_string(h.size()) + " bytes, more than readers accept (" +
                               std::to_string(detail::kMaxHeaderBytes) + ")"));
    return h;
  }

  static void encode_length(std::uint64_t n, std::byte* out) noexcept {
    for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xffu);
  }

  std::vector<Entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace vitc::io
