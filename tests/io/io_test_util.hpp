// SPDX-License-Identifier: Apache-2.0
#pragma once
// Helpers shared by the io tests and the fuzz seed generator: hand-made safetensors and IDX byte
// strings, gzip compression, and a scratch directory that cleans up after itself.

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace vitc_test {

using Bytes = std::vector<std::byte>;

inline Bytes bytes_of(std::string_view s) {
  Bytes out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<std::byte>(s[i]);
  return out;
}

inline std::string string_of(const Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

inline void append(Bytes& out, const Bytes& more) {
  out.insert(out.end(), more.begin(), more.end());
}

inline void append_le64(Bytes& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
}

// A safetensors file from a literal header (its length prefixed as is, no padding added) and a
// data area.
inline Bytes safetensors_file(std::string_view header, const Bytes& data) {
  Bytes out;
  append_le64(out, header.size());
  append(out, bytes_of(header));
  append(out, data);
  return out;
}
inline Bytes safetensors_file(std::string_view header, std::size_t data_bytes) {
  Bytes data(data_bytes);
  for (std::size_t i = 0; i < data_bytes; ++i) data[i] = static_cast<std::byte>(i * 7 + 1);
  return safetensors_file(header, data);
}

// An IDX file: magic 00 00 type rank, big-endian dims, then `data`.
inline Bytes idx_file(unsigned type, const std::vector<std::uint32_t>& dims, const Bytes& data) {
  Bytes out{std::byte{0}, std::byte{0}, static_cast<std::byte>(type),
            static_cast<std::byte>(dims.size())};
  for (std::uint32_t d : dims)
    for (int k = 3; k >= 0; --k) out.push_back(static_cast<std::byte>((d >> (8 * k)) & 0xffu));
  append(out, data);
  return out;
}

// `n` deterministic pseudo-random bytes.
inline Bytes pattern_bytes(std::size_t n, std::uint32_t seed = 1) {
  std::mt19937 rng(seed);
  Bytes out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xffu);
  return out;
}

// One gzip member (zlib's deflate at `level`, mtime 0).
inline Bytes gzip(const Bytes& input, int level = 9) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  Bytes out(deflateBound(&z, static_cast<uLong>(input.size())) + 64);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  z.avail_in = static_cast<uInt>(input.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate failed");
  out.resize(z.total_out);
  return out;
}

// The whole content of a gzip stream (test helper; no limits).
inline Bytes gunzip(const Bytes& input) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  z.avail_in = static_cast<uInt>(input.size());
  Bytes out;
  int rc = Z_OK;
  while (rc == Z_OK) {
    std::byte buf[4096];
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.insert(out.end(), buf, buf + (sizeof buf - z.avail_out));
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("inflate failed");
  return out;
}

inline Bytes read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes_of(s);
}

inline void write_file(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// A fresh directory under the system temp dir, removed with its content on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(std::string_view tag) {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("vitc-" + std::string(tag) + "-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::filesystem::path operator/(std::string_view name) const {
    return path_ / name;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace vitc_test
