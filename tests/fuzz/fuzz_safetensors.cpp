// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the safetensors reader: parse any bytes; for a file that opens, read every
// tensor as its natural type (and as float where it converts), view it, walk the metadata, then
// write everything back with SafetensorsWriter and check that it reads back identically. Only
// vitc::Error may escape the reader; anything else (a crash, a sanitizer report, another
// exception, a failed round trip) is a bug.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>

#include "read_natural.hpp"
#include "vitcompress/io/safetensors.hpp"

namespace {

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

// Writer -> reader must be the identity on anything the reader accepted.
void check_round_trip(const vitc::io::SafetensorsReader& reader) {
  vitc::io::SafetensorsWriter writer;
  std::optional<vitc::io::SafetensorsReader> again;
  try {
    for (const auto& t : reader.tensors()) writer.add_raw(t.name, t.dtype, t.shape, t.bytes);
    for (const auto& [key, value] : reader.metadata()) writer.set_metadata(key, value);
    again.emplace(vitc::io::SafetensorsReader::from_bytes(writer.serialize()));
  } catch (const vitc::Error& error) {
    std::fprintf(stderr, "fuzz_safetensors: round trip threw: %s\n", error.what());
    std::abort();
  }
  if (again->tensors().size() != reader.tensors().size()) bug("round trip lost tensors");
  if (again->metadata() != reader.metadata()) bug("round trip changed the metadata");
  for (const auto& t : reader.tensors()) {
    if (!again->contains(t.name)) bug("round trip lost a name");
    const auto& u = again->info(t.name);
    if (u.dtype != t.dtype || u.shape != t.shape || u.bytes.size() != t.bytes.size() ||
        (!t.bytes.empty() && std::memcmp(u.bytes.data(), t.bytes.data(), t.bytes.size()) != 0))
      bug("round trip changed a tensor");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::optional<vitc::io::SafetensorsReader> reader;
  try {
    reader.emplace(vitc::io::SafetensorsReader::from_buffer(bytes));
  } catch (const vitc::Error&) {
    return 0;
  }
  volatile std::uint64_t sink = 0;
  for (const auto& t : reader->tensors()) {
    try {
      sink = sink + vitc_fuzz::read_natural(*reader, t);
    } catch (const vitc::Error&) {
    }
    try {
      sink = sink + vitc_fuzz::view_natural(*reader, t);
    } catch (const vitc::Error&) {
    }
  }
  for (const auto& [key, value] : reader->metadata()) sink = sink + key.size() + value.size();
  check_round_trip(*reader);
  return 0;
}
