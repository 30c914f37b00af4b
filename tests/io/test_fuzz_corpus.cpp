// SPDX-License-Identifier: Apache-2.0
// The committed fuzz seed corpus is exactly what fuzz_seeds.hpp generates, and every seed is what
// it claims to be (valid, or refused on open, or refused on read). With
// VITC_REGENERATE_FUZZ_CORPUS=1 in the environment, the test rewrites the corpus instead.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "../fuzz/read_natural.hpp"
#include "fuzz_seeds.hpp"
#include "io_test_util.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/io/safetensors.hpp"

namespace {

using vitc_test::Bytes;
using vitc_test::Seed;
using vitc_test::SeedKind;

bool is_gzip(const Bytes& b) {
  return b.size() >= 2 && b[0] == std::byte{0x1f} && b[1] == std::byte{0x8b};
}

// Compares (or, when regenerating, writes) the seeds against the files of one corpus folder.
void sync_corpus(const std::vector<Seed>& seeds, const std::filesystem::path& dir) {
  const bool regenerate = std::getenv("VITC_REGENERATE_FUZZ_CORPUS") != nullptr;
  std::set<std::string> expected;
  std::size_t total = 0;
  for (const Seed& seed : seeds) {
    expected.insert(seed.file);
    total += seed.bytes.size();
  }
  CHECK(expected.size() == seeds.size());  // file names are unique
  CHECK(total < 8192);                     // the committed corpus stays small
  if (regenerate) {
    std::filesystem::create_directories(dir);
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (!expected.contains(entry.path().filename().string()))
        std::filesystem::remove(entry.path());
    for (const Seed& seed : seeds) vitc_test::write_file(dir / seed.file, seed.bytes);
    MESSAGE("regenerated " << seeds.size() << " seeds in " << dir.string());
    return;
  }
  REQUIRE(std::filesystem::is_directory(dir));
  std::set<std::string> present;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    present.insert(entry.path().filename().string());
  CHECK(present == expected);
  for (const Seed& seed : seeds) {
    CAPTURE(seed.file);
    if (!present.contains(seed.file)) continue;
    const Bytes committed = vitc_test::read_file(dir / seed.file);
    // Another zlib version may compress differently: gzip seeds are compared by content.
    if (is_gzip(seed.bytes) && is_gzip(committed) && committed != seed.bytes &&
        seed.kind == SeedKind::kValid)
      CHECK(vitc_test::gunzip(committed) == vitc_test::gunzip(seed.bytes));
    else
      CHECK(committed == seed.bytes);
  }
}

const std::filesystem::path kCorpus = std::filesystem::path(VITC_SOURCE_DIR) / "tests/fuzz/corpus";

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("fuzz seed corpus: safetensors seeds are what they claim and match the files") {
    const auto seeds = vitc_test::safetensors_seeds();
    for (const Seed& seed : seeds) {
      CAPTURE(seed.file);
      if (seed.kind == SeedKind::kRejectOnOpen) {
        CHECK_THROWS_AS(vitc::io::SafetensorsReader::from_buffer(seed.bytes), vitc::FormatError);
        continue;
      }
      const auto reader = vitc::io::SafetensorsReader::from_buffer(seed.bytes);
      int refused = 0;
      for (const auto& t : reader.tensors()) {
        try {
          (void)vitc_fuzz::read_natural(reader, t);
        } catch (const vitc::FormatError&) {
          ++refused;
        }
      }
      CHECK(refused == (seed.kind == SeedKind::kRejectOnRead ? 1 : 0));
    }
    sync_corpus(seeds, kCorpus / "safetensors");
  }

  TEST_CASE("fuzz seed corpus: IDX seeds are what they claim and match the files") {
    const auto seeds = vitc_test::idx_seeds();
    for (const Seed& seed : seeds) {
      CAPTURE(seed.file);
      int read = 0, format_errors = 0;
      auto attempt = [&](auto reader) {
        try {
          reader();
          ++read;
        } catch (const vitc::FormatError&) {
          ++format_errors;
        } catch (const vitc::ShapeError&) {
        }
      };
      attempt([&] { (void)vitc::io::read_idx_u8_buffer<1>(seed.bytes); });
      attempt([&] { (void)vitc::io::read_idx_u8_buffer<2>(seed.bytes); });
      attempt([&] { (void)vitc::io::read_idx_u8_buffer<3>(seed.bytes); });
      attempt([&] { (void)vitc::io::read_idx_u8_buffer<4>(seed.bytes); });
      if (seed.kind == SeedKind::kValid) {
        CHECK(read == 1);
      } else {
        CHECK(read == 0);
        CHECK(format_errors >= 1);
      }
    }
    sync_corpus(seeds, kCorpus / "idx");
  }
}
