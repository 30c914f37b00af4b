// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the IDX reader (plain and gzip): decode any bytes as ranks 1 to 4. Only
// vitc::Error may escape; a tensor that is returned must hold exactly the declared elements.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "vitcompress/io/idx.hpp"

namespace {

// A smaller cap than the default keeps each run fast; the logic is the same.
constexpr std::size_t kMaxBytes = std::size_t{1} << 24;

template <std::size_t Rank>
void try_rank(std::span<const std::byte> bytes) {
  try {
    const auto t = vitc::io::read_idx_u8_buffer<Rank>(bytes, "fuzz input", kMaxBytes);
    vitc::Index n = 1;
    for (vitc::Index e : t.shape()) n *= e;
    if (n != t.size() || static_cast<std::size_t>(n) > kMaxBytes) {
      std::fprintf(stderr, "fuzz_idx: inconsistent tensor size\n");
      std::abort();
    }
    volatile std::uint8_t sink = 0;
    for (std::uint8_t v : t.span()) sink = sink ^ v;
  } catch (const vitc::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try_rank<1>(bytes);
  try_rank<2>(bytes);
  try_rank<3>(bytes);
  try_rank<4>(bytes);
  return 0;
}
