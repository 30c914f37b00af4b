// SPDX-License-Identifier: Apache-2.0
#pragma once
// IDX files, and Fashion-MNIST, the real data set the float ViT trains and is evaluated on.
//
// IDX (LeCun's MNIST format; Fashion-MNIST uses it unchanged) is a 4-byte magic, big-endian:
//
//   0x00 0x00 TYPE RANK        TYPE 0x08 = unsigned byte (others: 0x09 i8, 0x0B i16, 0x0C i32,
//                              0x0D f32, 0x0E f64), RANK = number of dimensions
//   RANK x u32 big-endian      the dimensions, outermost first
//   data                       row-major, product(dims) elements, nothing after them
//
// Files usually ship gzip-compressed (Debian's dataset-fashion-mnist does). The reader recognises
// gzip by its magic bytes 1F 8B, so compressed and plain files both work whatever their names;
// concatenated gzip members are read as one stream and every member's CRC is checked.
//
// Validation, each violation a vitc::FormatError naming the file (or "IDX buffer"): the magic's
// two zero bytes; a known element type (only unsigned byte is read: the others are refused by
// name); rank 1 to 4; the header complete; the element count's product not overflowing and at
// most `max_bytes` (1 GiB by default); the data exactly as long as the dims say, not shorter and
// not longer; a gzip stream intact (no corrupt block, bad CRC, truncation or trailing garbage).
// A rank different from the one asked for is a ShapeError.
//
// Gzip bombs: the size the header promises is checked against `max_bytes` before anything else is
// inflated; the output buffer grows only as data actually arrives; and past the promised size the
// reader inflates at most 1 MiB more into a small scratch buffer (to report the excess) before it
// gives up. A hostile file therefore costs at most the promised size (<= max_bytes) in memory and
// that plus 1 MiB of inflation, whatever it would expand to.
//
// Fashion-MNIST: find_fashion_mnist_dir() looks in $VITC_FASHION_MNIST_DIR, then in
// /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist package), and
// load_fashion_mnist() returns images [N, 28, 28] and labels [N] (values 0..9) of a split.

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/io/detail/mapped_file.hpp"

namespace vitc::io {

// The default cap on the data an IDX file may declare (Fashion-MNIST's largest file holds 47 MB).
inline constexpr std::size_t kIdxDefaultMaxBytes = std::size_t{1} << 30;

namespace detail {

inline std::string hex_byte(unsigned value) {
  char s[8];
  std::snprintf(s, sizeof s, "0x%02X", value & 0xffu);
  return s;
}

inline std::string idx_dims_string(const std::vector<Index>& dims) {
  std::string s = "[";
  for (std::size_t d = 0; d < dims.size(); ++d) s += (d ? ", " : "") + std::to_string(dims[d]);
  return s + "]";
}

inline const char* idx_type_name(unsigned type) noexcept {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return nullptr;
  }
}

// Sequential reader over plain bytes or a gzip stream.
class IdxByteStream {
 public:
  IdxByteStream(std::span<const std::byte> input, const std::string& source)
      : input_(input), what_(source + " (gzip)") {
    gzip_ = input.size() >= 2 && input[0] == std::byte{0x1f} && input[1] == std::byte{0x8b};
    if (gzip_) {
      // 16 + MAX_WBITS: gzip wrapper only (we checked its magic), with its CRC-32 and size check.
      if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK)
        VITC_THROW(FormatError(what_ + ": cannot initialise zlib"));
      z_initialised_ = true;
      z_.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
      z_.avail_in = 0;
    }
  }
  IdxByteStream(const IdxByteStream&) = delete;
  IdxByteStream& operator=(const IdxByteStream&) = delete;
  ~IdxByteStream() {
    if (z_initialised_) inflateEnd(&z_);
  }

  [[nodiscard]] bool gzip() const noexcept { return gzip_; }

  // Reads up to n bytes into out; returns how many were read (fewer only at the end).
  std::size_t read(std::byte* out, std::size_t n) {
    if (!gzip_) {
      const std::size_t k = std::min(n, input_.size() - pos_);
      if (k) std::memcpy(out, input_.data() + pos_, k);
      pos_ += k;
      return k;
    }
    std::size_t total = 0;
    while (total < n && !finished_) {
      refill();
      const std::size_t chunk = std::min<std::size_t>(n - total, kChunk);
      z_.next_out = reinterpret_cast<Bytef*>(out + total);
      z_.avail_out = static_cast<uInt>(chunk);
      const int rc = inflate(&z_, Z_NO_FLUSH);
      total += chunk - z_.avail_out;
      if (rc == Z_STREAM_END) {
        next_member();
      } else if (rc == Z_BUF_ERROR) {
        // No progress possible. Output space is never 0 here, so the input ran out: refill it,
        // or, at the end of the input, the stream is truncated.
        if (z_.avail_in == 0 && pos_ == input_.size())
          VITC_THROW(FormatError(what_ + ": the stream is truncated"));
        if (z_.avail_in != 0)  // cannot happen per zlib's contract; never spin on it
          VITC_THROW(FormatError(what_ + ": inflate made no progress"));
      } else if (rc != Z_OK) {
        VITC_THROW(FormatError(what_ + ": corrupt gzip data (" +
                               std::string(z_.msg ? z_.msg : "zlib error " + std::to_string(rc)) +
                               ")"));
      }
    }
    return total;
  }

 private:
  // Feeds zlib at most kChunk input bytes at a time (avail_in is 32-bit).
  void refill() {
    if (z_.avail_in > 0 || pos_ == input_.size()) return;
    const std::size_t k = std::min(kChunk, input_.size() - pos_);
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input_.data() + pos_));
    z_.avail_in = static_cast<uInt>(k);
    pos_ += k;
  }

  // After a member's end: another member may follow; anything else is trailing garbage.
  void next_member() {
    const std::size_t rest = z_.avail_in + (input_.size() - pos_);
    if (rest == 0) {
      finished_ = true;
      return;
    }
    const std::size_t at = input_.size() - rest;
    if (rest < 2 || input_[at] != std::byte{0x1f} || input_[at + 1] != std::byte{0x8b})
      VITC_THROW(FormatError(what_ + ": " + std::to_string(rest) +
                             " bytes of garbage after the gzip stream"));
    if (inflateReset(&z_) != Z_OK) VITC_THROW(FormatError(what_ + ": cannot reset zlib"));
  }

  static constexpr std::size_t kChunk = std::size_t{1} << 20;

  std::span<const std::byte> input_;
  std::string what_;     // the source, as error messages name it
  std::size_t pos_ = 0;  // plain: read position; gzip: input handed to zlib so far
  bool gzip_ = false;
  bool finished_ = false;
  bool z_initialised_ = false;
  z_stream z_{};
};

// The whole IDX decode; dims and payload are validated against each other.
struct IdxContents {
  std::vector<Index> dims;
  std::vector<std::byte> data;
};

inline IdxContents decode_idx_u8(std::span<const std::byte> input, const std::string& source,
                                 std::size_t expected_rank, std::size_t max_bytes) {
  IdxByteStream stream(input, source);
  const std::string what = source + (stream.gzip() ? " (gzip)" : "");
  auto fail = [&](const std::string& message) { VITC_THROW(FormatError(what + ": " + message)); };

  std::array<std::byte, 4> magic{};
  if (stream.read(magic.data(), 4) < 4) fail("shorter than the 4-byte IDX magic");
  const auto b = [&](std::size_t i) { return static_cast<unsigned>(magic[i]); };
  if (b(0) != 0 || b(1) != 0) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%02X%02X%02X%02X", b(0), b(1), b(2), b(3));
    fail(std::string("wrong magic ") + hex + ": an IDX file starts with two zero bytes");
  }
  const unsigned type = b(2), rank = b(3);
  if (!idx_type_name(type)) fail("unknown element type " + hex_byte(type));
  if (type != 0x08)
    fail("element type " + hex_byte(type) + " (" + idx_type_name(type) +
         ") is not supported; only unsigned byte (0x08) is read");
  if (rank == 0 || rank > 4) fail("rank " + std::to_string(rank) + " is not between 1 and 4");

  std::array<std::byte, 16> raw{};
  if (stream.read(raw.data(), 4 * rank) < 4 * rank)
    fail("the header ends before its " + std::to_string(rank) + " dimensions");
  IdxContents out;
  std::uint64_t count = 1;
  bool overflow = false;
  for (unsigned d = 0; d < rank; ++d) {
    std::uint32_t v = 0;
    for (unsigned k = 0; k < 4; ++k) v = (v << 8) | static_cast<std::uint8_t>(raw[4 * d + k]);
    out.dims.push_back(static_cast<Index>(v));
    overflow = overflow || __builtin_mul_overflow(count, std::uint64_t{v}, &count);
  }
  const std::string dims = idx_dims_string(out.dims);
  if (overflow) fail("dims " + dims + " overflow 64 bits");
  if (rank != expected_rank)
    VITC_THROW(ShapeError(what + ": rank " + std::to_string(rank) + " (dims " + dims +
                          "), expected rank " + std::to_string(expected_rank)));
  if (count > max_bytes)
    fail("dims " + dims + " declare " + std::to_string(count) + " bytes, more than the limit of " +
         std::to_string(max_bytes));

  // Read exactly `count` bytes, growing the buffer only as data arrives, then one more to prove
  // there is nothing after them.
  const auto expected = static_cast<std::size_t>(count);
  std::size_t have = 0;
  while (have < expected) {
    const std::size_t want = std::min(expected - have, std::max<std::size_t>(have, 1 << 16));
    out.data.resize(have + want);
    const std::size_t got = stream.read(out.data.data() + have, want);
    have += got;
    if (got < want) break;
  }
  if (have < expected)
    fail("data is " + std::to_string(have) + " bytes, but dims " + dims + " need " +
         std::to_string(expected));
  std::byte extra[256];
  std::size_t trailing = 0;
  for (std::size_t got; (got = stream.read(extra, sizeof extra)) > 0;) {
    trailing += got;
    if (trailing >= (std::size_t{1} << 20)) break;  // enough to say so; stop inflating
  }
  if (trailing > 0)
    fail("data is longer than dims " + dims + " need (" +
         (trailing >= (std::size_t{1} << 20) ? std::string("at least ") : std::string()) +
         std::to_string(trailing) + " extra bytes)");
  return out;
}

template <std::size_t Rank>
Tensor<std::uint8_t, Rank> idx_to_tensor(IdxContents&& contents) {
  Shape<Rank> shape{};
  std::copy(contents.dims.begin(), contents.dims.end(), shape.begin());
  Tensor<std::uint8_t, Rank> out(shape);
  if (!contents.data.empty()) std::memcpy(out.data(), contents.data.data(), contents.data.size());
  return out;
}

}  // namespace detail

// Reads an IDX file of unsigned bytes, plain or gzip-compressed. IoError (naming the path) if it
// cannot be read, FormatError if it breaks the format, ShapeError if its rank is not Rank.
template <std::size_t Rank>
Tensor<std::uint8_t, Rank> read_idx_u8(const std::filesystem::path& path,
                                       std::size_t max_bytes = kIdxDefaultMaxBytes) {
  static_assert(Rank >= 1 && Rank <= 4, "IDX files have 1 to 4 dimensions");
  const auto file = detail::MappedFile::open(path, "IDX file");
  return detail::idx_to_tensor<Rank>(
      detail::decode_idx_u8(file.bytes(), "IDX file '" + path.string() + "'", Rank, max_bytes));
}

// The same from bytes in memory; `name` is how error messages call the buffer.
template <std::size_t Rank>
Tensor<std::uint8_t, Rank> read_idx_u8_buffer(std::span<const std::byte> bytes,
                                              std::string_view name = "IDX buffer",
                                              std::size_t max_bytes = kIdxDefaultMaxBytes) {
  static_assert(Rank >= 1 && Rank <= 4, "IDX files have 1 to 4 dimensions");
  return detail::idx_to_tensor<Rank>(
      detail::decode_idx_u8(bytes, std::string(name), Rank, max_bytes));
}

// ---- Fashion-MNIST ---------------------------------------------------------------------------

enum class Split { kTrain, kTest };

// One split: images [N, 28, 28] (0 = background, 255 = ink) and labels [N] in 0..9.
struct Dataset {
  Tensor<std::uint8_t, 3> images;
  Tensor<std::uint8_t, 1> labels;
};

// Facts about the data set, and the functions below under the class's name for callers who spell
// them FashionMnist::...
struct FashionMnist {
  using Dataset = io::Dataset;
  using Split = io::Split;
  static constexpr Index kImageSide = 28;
  static constexpr int kClasses = 10;
  static constexpr Index kTrainSize = 60000;
  static constexpr Index kTestSize = 10000;
  static constexpr std::array<std::string_view, 10> kClassNames = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  static constexpr const char* kEnvVar = "VITC_FASHION_MNIST_DIR";
  static constexpr const char* kSystemDir = "/usr/share/datasets/fashion-mnist";
  static constexpr const char* kDebianPackage = "dataset-fashion-mnist";

  // The file of a split, gzip-compressed or not, as the data set names it.
  static constexpr std::string_view images_file(Split split) noexcept {
    return split == Split::kTrain ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
  }
  static constexpr std::string_view labels_file(Split split) noexcept {
    return split == Split::kTrain ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
  }

  static std::filesystem::path find_fashion_mnist_dir();
  static Dataset load_fashion_mnist(Split split, const std::filesystem::path& dir = {});
};

namespace detail {

// `dir/name.gz` if it exists, else `dir/name`, else an empty path.
inline std::filesystem::path find_idx_file(const std::filesystem::path& dir,
                                           std::string_view name) {
  std::error_code ec;
  for (const std::string& candidate : {std::string(name) + ".gz", std::string(name)}) {
    const auto path = dir / candidate;
    if (std::filesystem::is_regular_file(path, ec)) return path;
  }
  return {};
}

inline bool has_fashion_mnist(const std::filesystem::path& dir) {
  for (Split s : {Split::kTrain, Split::kTest})
    if (find_idx_file(dir, FashionMnist::images_file(s)).empty() ||
        find_idx_file(dir, FashionMnist::labels_file(s)).empty())
      return false;
  return true;
}

}  // namespace detail

// The directory holding the four Fashion-MNIST files (each may be .gz or plain): the one named by
// $VITC_FASHION_MNIST_DIR if that is set (an IoError if the files are not there: a wrong setting
// is reported, not silently bypassed), otherwise /usr/share/datasets/fashion-mnist. IoError naming
// both places and the Debian package if neither has them.
inline std::filesystem::path find_fashion_mnist_dir() {
  if (const char* env = std::getenv(FashionMnist::kEnvVar); env && *env) {
    if (detail::has_fashion_mnist(env)) return env;
    VITC_THROW(
        IoError(std::string("Fashion-MNIST: $") + FashionMnist::kEnvVar + " = '" + env +
                "' does not hold train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"));
  }
  if (detail::has_fashion_mnist(FashionMnist::kSystemDir)) return FashionMnist::kSystemDir;
  VITC_THROW(IoError(
      std::string("Fashion-MNIST not found: $") + FashionMnist::kEnvVar + " is not set and " +
      FashionMnist::kSystemDir + " does not hold its files; install the Debian package " +
      FashionMnist::kDebianPackage + " (apt-get install " + FashionMnist::kDebianPackage +
      ") or point $" + FashionMnist::kEnvVar + " at a directory with the four IDX files"));
}

// Loads one split from `dir` (default: find_fashion_mnist_dir()). Checks that the images are
// [N, 28, 28], the labels [N] with the same N, and every label below 10.
inline Dataset load_fashion_mnist(Split split, std::filesystem::path dir = {}) {
  if (dir.empty()) dir = find_fashion_mnist_dir();
  const auto locate = [&](std::string_view name) {
    auto path = detail::find_idx_file(dir, name);
    if (path.empty())
      VITC_THROW(
          IoError("Fashion-MNIST: no " + std::string(name) + "[.gz] in '" + dir.string() + "'"));
    return path;
  };
  const auto images_path = locate(FashionMnist::images_file(split));
  const auto labels_path = locate(FashionMnist::labels_file(split));
  Dataset out{read_idx_u8<3>(images_path), read_idx_u8<1>(labels_path)};
  const Index n = out.images.extent(0);
  if (out.images.extent(1) != FashionMnist::kImageSide ||
      out.images.extent(2) != FashionMnist::kImageSide)
    VITC_THROW(FormatError("Fashion-MNIST images '" + images_path.string() + "': shape " +
                           vitc::detail::shape_string(out.images.shape()) +
                           ", expected [N, 28, 28]"));
  if (out.labels.extent(0) != n)
    VITC_THROW(FormatError("Fashion-MNIST labels '" + labels_path.string() +
                           "': " + std::to_string(out.labels.extent(0)) + " labels for " +
                           std::to_string(n) + " images in '" + images_path.string() + "'"));
  for (Index i = 0; i < n; ++i)
    if (out.labels(i) >= FashionMnist::kClasses)
      VITC_THROW(FormatError("Fashion-MNIST labels '" + labels_path.string() + "': label " +
                             std::to_string(out.labels(i)) + " at index " + std::to_string(i) +
                             " is not below " + std::to_string(FashionMnist::kClasses)));
  return out;
}

inline std::filesystem::path FashionMnist::find_fashion_mnist_dir() {
  return io::find_fashion_mnist_dir();
}
inline Dataset FashionMnist::load_fashion_mnist(Split split, const std::filesystem::path& dir) {
  return io::load_fashion_mnist(split, dir);
}

}  // namespace vitc::io
