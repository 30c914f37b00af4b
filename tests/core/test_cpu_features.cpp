// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "vitcompress/core/cpu_features.hpp"

namespace {
// The feature words the Linux kernel reports for this CPU ("flags" on x86, "Features" on Arm).
// Empty when absent, or when it describes another architecture (qemu-user shows the host's).
std::set<std::string> proc_cpuinfo_flags() {
#if defined(__aarch64__)
  const char* key = "Features";
#else
  const char* key = "flags";
#endif
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::set<std::string> out;
      for (std::string w; words >> w;) out.insert(w);
      return out;
    }
  }
  return {};
}
}  // namespace

TEST_SUITE("core") {
  TEST_CASE("cpu_features agrees with /proc/cpuinfo") {
    const vitc::CpuFeatures& f = vitc::cpu_features();
    CHECK(&f == &vitc::cpu_features());  // detected once
    const std::set<std::string> flags = proc_cpuinfo_flags();
    if (flags.empty()) {
      MESSAGE(
          "no /proc/cpuinfo features for this architecture (qemu-user?); only the call is checked");
      return;
    }
    auto has = [&](const char* w) { return flags.count(w) != 0; };
#if defined(__x86_64__)
    CHECK(f.sse41 == has("sse4_1"));
    CHECK(f.avx2 == has("avx2"));
    CHECK(f.fma == has("fma"));
    CHECK(f.f16c == has("f16c"));
    CHECK(f.avx512f == has("avx512f"));
    CHECK(f.avx512bw == has("avx512bw"));
    CHECK(f.avx512dq == has("avx512dq"));
    CHECK(f.avx512vl == has("avx512vl"));
    CHECK(f.avx512vnni == has("avx512_vnni"));
    CHECK(f.avxvnni == has("avx_vnni"));
    CHECK_FALSE(f.neon);
#elif defined(__aarch64__)
    CHECK(f.neon == has("asimd"));
    CHECK(f.neon_dotprod == has("asimddp"));
    CHECK_FALSE(f.avx2);
#endif
  }
}
