// SPDX-License-Identifier: Apache-2.0
#pragma once
// Helpers shared by the vitc subcommands: output in table or JSON form, timing, file sizes.

#include <sys/resource.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "vitcompress/core/error.hpp"

namespace vitc::cli {

using Json = nlohmann::ordered_json;

// Options every subcommand shares.
struct CommonOptions {
  bool json = false;   // print one JSON object on stdout instead of tables
  bool quiet = false;  // no progress bars
  int threads = 2;
};

inline void print_json(const Json& j) { std::cout << j.dump(2) << '\n'; }

inline std::uintmax_t file_bytes(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) VITC_THROW(IoError("cannot stat '" + path.string() + "': " + ec.message()));
  return size;
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Gives the heap memory freed so far back to the system. glibc keeps freed heap pages resident
// (loading a model frees more than the model keeps), so without this the resident memory of a
// process that only runs the model would still count what loading used.
inline void return_freed_memory() noexcept {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

// Peak resident set size of this process, in bytes.
inline long peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss * 1024L;
}

inline std::string human_bytes(double bytes) {
  char buf[32];
  if (bytes >= 1 << 20)
    std::snprintf(buf, sizeof buf, "%.2f MiB", bytes / (1 << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024);
  return buf;
}

}  // namespace vitc::cli
