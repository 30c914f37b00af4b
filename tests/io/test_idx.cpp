// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "vitcompress/io/idx.hpp"

using vitc::Index;
using vitc::io::read_idx_u8;
using vitc::io::read_idx_u8_buffer;
using vitc_test::Bytes;
using vitc_test::gzip;
using vitc_test::idx_file;
using vitc_test::pattern_bytes;

namespace {

#define CHECK_IDX_REJECTS(Rank, buffer, substring)                                           \
  CHECK_THROWS_WITH_AS((void)read_idx_u8_buffer<Rank>(buffer), doctest::Contains(substring), \
                       vitc::FormatError)

// Sets an environment variable for the lifetime of the object, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A miniature Fashion-MNIST directory: n images of side x side, labels as given.
void write_fake_fashion_mnist(const std::filesystem::path& dir, std::uint32_t n, std::uint32_t side,
                              const Bytes& labels, bool compress) {
  const Bytes images = idx_file(0x08, {n, side, side}, pattern_bytes(std::size_t{n} * side * side));
  const Bytes label_file = idx_file(0x08, {static_cast<std::uint32_t>(labels.size())}, labels);
  for (const char* split : {"train", "t10k"}) {
    const std::string suffix = compress ? ".gz" : "";
    vitc_test::write_file(dir / (std::string(split) + "-images-idx3-ubyte" + suffix),
                          compress ? gzip(images) : images);
    vitc_test::write_file(dir / (std::string(split) + "-labels-idx1-ubyte" + suffix),
                          compress ? gzip(label_file) : label_file);
  }
}

Bytes labels_below_ten(std::size_t n) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(i % 10);
  return out;
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("IDX: plain and gzip files of rank 1 to 4 read back exactly") {
    const Bytes data = pattern_bytes(2 * 3 * 4 * 5, 9);
    const Bytes rank4 = idx_file(0x08, {2, 3, 4, 5}, data);
    for (const Bytes& file : {rank4, gzip(rank4)}) {
      const auto t = read_idx_u8_buffer<4>(file);
      REQUIRE(t.shape() == vitc::Shape<4>{2, 3, 4, 5});
      CHECK(std::equal(t.span().begin(), t.span().end(),
                       reinterpret_cast<const std::uint8_t*>(data.data())));
      CHECK(t(1, 2, 3, 4) == static_cast<std::uint8_t>(data.back()));
    }
    const auto r1 = read_idx_u8_buffer<1>(idx_file(0x08, {3}, pattern_bytes(3)));
    CHECK(r1.size() == 3);
    const auto r2 = read_idx_u8_buffer<2>(gzip(idx_file(0x08, {2, 1}, pattern_bytes(2))));
    CHECK(r2.shape() == vitc::Shape<2>{2, 1});
    const auto r3 = read_idx_u8_buffer<3>(idx_file(0x08, {0, 28, 28}, {}));
    CHECK(r3.shape() == vitc::Shape<3>{0, 28, 28});
    CHECK(r3.empty());
  }

  TEST_CASE("IDX: concatenated gzip members are one stream") {
    const Bytes file = idx_file(0x08, {4, 100}, pattern_bytes(400, 3));
    const Bytes head(file.begin(), file.begin() + 150), tail(file.begin() + 150, file.end());
    Bytes two = gzip(head);
    vitc_test::append(two, gzip(tail));
    const auto t = read_idx_u8_buffer<2>(two);
    CHECK(t(3, 99) == static_cast<std::uint8_t>(file.back()));
    CHECK(t(0, 0) == static_cast<std::uint8_t>(file[12]));
  }

  TEST_CASE("IDX: malformed headers are refused, naming the buffer and the fault") {
    CHECK_IDX_REJECTS(1, Bytes{}, "IDX buffer: shorter than the 4-byte IDX magic");
    CHECK_IDX_REJECTS(1, Bytes(3), "shorter than the 4-byte IDX magic");
    Bytes wrong = idx_file(0x08, {1}, pattern_bytes(1));
    wrong[1] = std::byte{8};
    CHECK_IDX_REJECTS(1, wrong, "wrong magic 0x00080801");
    CHECK_IDX_REJECTS(1, idx_file(0x07, {1}, pattern_bytes(1)), "unknown element type 0x07");
    CHECK_IDX_REJECTS(1, idx_file(0x0D, {1}, pattern_bytes(4)),
                      "element type 0x0D (float32) is not supported; only unsigned byte (0x08)");
    CHECK_IDX_REJECTS(1, idx_file(0x08, {}, {}), "rank 0 is not between 1 and 4");
    CHECK_IDX_REJECTS(1, idx_file(0x08, {1, 1, 1, 1, 1}, pattern_bytes(1)),
                      "rank 5 is not between 1 and 4");
    Bytes short_header = idx_file(0x08, {5, 5, 5}, {});
    short_header.resize(12);
    CHECK_IDX_REJECTS(3, short_header, "the header ends before its 3 dimensions");
    CHECK_IDX_REJECTS(4, idx_file(0x08, {0xffffffffu, 0xffffffffu, 0xffffffffu, 3}, {}),
                      "dims [4294967295, 4294967295, 4294967295, 3] overflow 64 bits");
    CHECK_IDX_REJECTS(2, idx_file(0x08, {70000, 70000}, pattern_bytes(10)),
                      "dims [70000, 70000] declare 4900000000 bytes, more than the limit of "
                      "1073741824");
    CHECK_THROWS_WITH_AS(
        (void)read_idx_u8_buffer<1>(idx_file(0x08, {100}, pattern_bytes(100)), "tiny", 99),
        "tiny: dims [100] declare 100 bytes, more than the limit of 99", vitc::FormatError);
    CHECK_THROWS_WITH_AS((void)read_idx_u8_buffer<3>(idx_file(0x08, {6, 2}, pattern_bytes(12))),
                         "IDX buffer: rank 2 (dims [6, 2]), expected rank 3", vitc::ShapeError);
  }

  TEST_CASE("IDX: the data must be exactly as long as the dims say") {
    CHECK_IDX_REJECTS(2, idx_file(0x08, {3, 4}, pattern_bytes(11)),
                      "data is 11 bytes, but dims [3, 4] need 12");
    CHECK_IDX_REJECTS(2, idx_file(0x08, {3, 4}, pattern_bytes(13)),
                      "data is longer than dims [3, 4] need (1 extra bytes)");
    CHECK_IDX_REJECTS(2, gzip(idx_file(0x08, {3, 4}, pattern_bytes(11))),
                      "IDX buffer (gzip): data is 11 bytes, but dims [3, 4] need 12");
    CHECK_IDX_REJECTS(2, gzip(idx_file(0x08, {3, 4}, pattern_bytes(20))),
                      "IDX buffer (gzip): data is longer than dims [3, 4] need (8 extra bytes)");
  }

  TEST_CASE("IDX: broken gzip streams are refused") {
    const Bytes good = gzip(idx_file(0x08, {64, 64}, pattern_bytes(64 * 64, 5)));
    REQUIRE(read_idx_u8_buffer<2>(good).size() == 64 * 64);
    for (std::size_t cut : {std::size_t{3}, std::size_t{10}, good.size() / 2, good.size() - 1}) {
      CAPTURE(cut);
      const Bytes truncated(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
      CHECK_IDX_REJECTS(2, truncated, "IDX buffer (gzip)");
    }
    Bytes bad_crc = good;
    bad_crc[bad_crc.size() - 6] ^= std::byte{0x40};  // inside the CRC-32 of the trailer
    CHECK_IDX_REJECTS(2, bad_crc, "corrupt gzip data (incorrect data check)");
    Bytes bad_size = good;
    bad_size[bad_size.size() - 2] ^= std::byte{0x01};  // inside ISIZE
    CHECK_IDX_REJECTS(2, bad_size, "corrupt gzip data (incorrect length check)");
    Bytes bad_method = good;
    bad_method[2] = std::byte{7};  // compression method must be 8 (deflate)
    CHECK_IDX_REJECTS(2, bad_method, "corrupt gzip data");
    Bytes garbage = good;
    garbage.push_back(std::byte{0});
    garbage.push_back(std::byte{0});
    CHECK_IDX_REJECTS(2, garbage, "2 bytes of garbage after the gzip stream");
    // Corruption inside the deflate blocks is caught by inflate or, failing that, by the CRC.
    int refused = 0;
    for (std::size_t at = 12; at + 8 < good.size(); at += 37) {
      Bytes flipped = good;
      flipped[at] ^= std::byte{0x10};
      try {
        (void)read_idx_u8_buffer<2>(flipped);
      } catch (const vitc::FormatError&) {
        ++refused;
      }
    }
    CHECK(refused == static_cast<int>((good.size() - 8 - 12 + 36) / 37));
  }

  TEST_CASE("IDX: a gzip bomb is refused without inflating it") {
    // 16 MiB of zeros compress to under 128 KiB. Behind a header that declares 16 bytes, the reader
    // stops after a bounded look past the end (1 MiB), instead of inflating all of it.
    const Bytes bomb = gzip(idx_file(0x08, {16}, Bytes(std::size_t{16} << 20)), 1);
    CHECK(bomb.size() < (std::size_t{1} << 17));
    CHECK_IDX_REJECTS(1, bomb, "data is longer than dims [16] need (at least 1048576 extra bytes)");
    // Declaring the whole size is refused up front when it exceeds the cap.
    const Bytes declared = gzip(idx_file(0x08, {16, 1024, 1024}, Bytes(std::size_t{16} << 20)), 1);
    CHECK_THROWS_WITH_AS((void)read_idx_u8_buffer<3>(declared, "bomb", std::size_t{1} << 20),
                         doctest::Contains("declare 16777216 bytes, more than the limit"),
                         vitc::FormatError);
  }

  TEST_CASE("IDX files: read from disk, IoError naming a missing path") {
    vitc_test::ScratchDir dir("idx");
    const Bytes file = idx_file(0x08, {2, 2}, pattern_bytes(4));
    vitc_test::write_file(dir / "plain.idx", file);
    vitc_test::write_file(dir / "named-plain.gz", file);  // the content decides, not the name
    vitc_test::write_file(dir / "packed", gzip(file));
    for (const char* name : {"plain.idx", "named-plain.gz", "packed"}) {
      CAPTURE(name);
      CHECK(read_idx_u8<2>(dir / name)(1, 1) == static_cast<std::uint8_t>(file.back()));
    }
    const auto missing = dir / "missing-idx1-ubyte.gz";
    CHECK_THROWS_WITH_AS((void)read_idx_u8<1>(missing),
                         doctest::Contains(("cannot open IDX file '" + missing.string()).c_str()),
                         vitc::IoError);
    vitc_test::write_file(dir / "short", Bytes(2));
    CHECK_THROWS_WITH_AS((void)read_idx_u8<1>(dir / "short"),
                         doctest::Contains(("IDX file '" + (dir / "short").string() +
                                            "': shorter than the 4-byte IDX magic")
                                               .c_str()),
                         vitc::FormatError);
  }

  TEST_CASE("Fashion-MNIST: locating the files") {
    vitc_test::ScratchDir dir("fmnist");
    write_fake_fashion_mnist(dir.path(), 3, 28, labels_below_ten(3), /*compress=*/false);
    {
      ScopedEnv env(vitc::io::FashionMnist::kEnvVar, dir.path().string());
      CHECK(vitc::io::find_fashion_mnist_dir() == dir.path());
      const auto test = vitc::io::load_fashion_mnist(vitc::io::Split::kTest);
      CHECK(test.images.shape() == vitc::Shape<3>{3, 28, 28});
      CHECK(test.labels(2) == 2);
      CHECK(vitc::io::FashionMnist::find_fashion_mnist_dir() == dir.path());
    }
    vitc_test::ScratchDir empty("fmnist-empty");
    ScopedEnv env(vitc::io::FashionMnist::kEnvVar, empty.path().string());
    CHECK_THROWS_WITH_AS(vitc::io::find_fashion_mnist_dir(),
                         doctest::Contains(("$VITC_FASHION_MNIST_DIR = '" + empty.path().string() +
                                            "' does not hold train-images-idx3-ubyte[.gz]")
                                               .c_str()),
                         vitc::IoError);
    CHECK_THROWS_WITH_AS(vitc::io::load_fashion_mnist(vitc::io::Split::kTrain, empty.path()),
                         doctest::Contains("Fashion-MNIST: no train-images-idx3-ubyte[.gz] in"),
                         vitc::IoError);
  }

  TEST_CASE("Fashion-MNIST: inconsistent files are refused") {
    using vitc::io::Split;
    vitc_test::ScratchDir dir("fmnist-bad");
    write_fake_fashion_mnist(dir.path(), 4, 28, labels_below_ten(3), true);
    CHECK_THROWS_WITH_AS(vitc::io::load_fashion_mnist(Split::kTrain, dir.path()),
                         doctest::Contains("3 labels for 4 images"), vitc::FormatError);
    write_fake_fashion_mnist(dir.path(), 4, 27, labels_below_ten(4), true);
    CHECK_THROWS_WITH_AS(vitc::io::load_fashion_mnist(Split::kTrain, dir.path()),
                         doctest::Contains("shape [4, 27, 27], expected [N, 28, 28]"),
                         vitc::FormatError);
    Bytes labels = labels_below_ten(4);
    labels[3] = std::byte{10};
    write_fake_fashion_mnist(dir.path(), 4, 28, labels, true);
    CHECK_THROWS_WITH_AS(vitc::io::load_fashion_mnist(Split::kTest, dir.path()),
                         doctest::Contains("label 10 at index 3 is not below 10"),
                         vitc::FormatError);
  }

  TEST_CASE("Fashion-MNIST: the real data set") {
    using vitc::io::Split;
    // scripts/install-deps installs Debian's dataset-fashion-mnist, so its absence is a failure.
    std::filesystem::path dir;
    REQUIRE_NOTHROW(dir = vitc::io::find_fashion_mnist_dir());
    for (Split split : {Split::kTrain, Split::kTest}) {
      const bool train = split == Split::kTrain;
      CAPTURE(train);
      const auto data = vitc::io::load_fashion_mnist(split, dir);
      const Index n =
          train ? vitc::io::FashionMnist::kTrainSize : vitc::io::FashionMnist::kTestSize;
      REQUIRE(data.images.shape() == vitc::Shape<3>{n, 28, 28});
      REQUIRE(data.labels.shape() == vitc::Shape<1>{n});
      // The data set is balanced: every class has exactly a tenth of the images.
      std::array<Index, 10> per_class{};
      for (Index i = 0; i < n; ++i) ++per_class[data.labels(i)];
      for (Index c : per_class) CHECK(c == n / 10);
      // Pinned once from these files (computed with Python's gzip module, an independent reader):
      // the first labels and the sum of all pixels.
      std::vector<int> first;
      for (Index i = 0; i < 10; ++i) first.push_back(data.labels(i));
      const std::uint64_t pixel_sum =
          std::accumulate(data.images.span().begin(), data.images.span().end(), std::uint64_t{0});
      if (train) {
        CHECK(first == std::vector<int>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
        CHECK(pixel_sum == 3431114169u);
      } else {
        CHECK(first == std::vector<int>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
        CHECK(pixel_sum == 573469082u);
      }
    }
  }
}
