// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#include "vitcompress/core/cpu_features.hpp"
#include "vitcompress/kernels/arch.hpp"

namespace {
namespace arch = vitc::kernels::arch;
using arch::ArchId;

struct TagName {
  std::string_view operator()(arch::Scalar) const { return "Scalar"; }
  template <class A>
  std::string_view operator()(arch::Xsimd<A>) const {
    return "Xsimd";
  }
  std::string_view operator()(arch::Avx2) const { return "Avx2"; }
  std::string_view operator()(arch::Avx512Vnni) const { return "Avx512Vnni"; }
};
}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("arch: names and ids") {
    CHECK(arch::Scalar::kName == "scalar");
    CHECK(arch::XsimdNative::kName == "xsimd");
    CHECK(arch::Avx2::kName == "avx2");
    CHECK(arch::Avx512Vnni::kName == "vnni");
    CHECK(arch::kArchIdOf<arch::Scalar> == ArchId::kScalar);
    CHECK(arch::kArchIdOf<arch::XsimdNative> == ArchId::kXsimd);
    CHECK(arch::kArchIdOf<arch::Avx2> == ArchId::kAvx2);
    CHECK(arch::kArchIdOf<arch::Avx512Vnni> == ArchId::kAvx512Vnni);
    for (ArchId id : {ArchId::kScalar, ArchId::kXsimd, ArchId::kAvx2, ArchId::kAvx512Vnni})
      CHECK(arch::arch_name(id) != "unknown");
    CHECK(arch::Scalar::available());
  }

  TEST_CASE("arch: select_arch picks the fastest available path and honours names") {
    const ArchId best = arch::select_arch(nullptr);
    CHECK(arch::is_available(best));
    CHECK(arch::select_arch("") == best);
    for (ArchId id : {ArchId::kScalar, ArchId::kXsimd, ArchId::kAvx2, ArchId::kAvx512Vnni}) {
      if (static_cast<int>(id) > static_cast<int>(best)) CHECK_FALSE(arch::is_available(id));
      const std::string name(arch::arch_name(id));
      if (arch::is_available(id))
        CHECK(arch::select_arch(name.c_str()) == id);
      else
        CHECK_THROWS_WITH_AS((void)arch::select_arch(name.c_str()), doctest::Contains("VITC_ARCH"),
                             vitc::ArgumentError);
    }
    CHECK_THROWS_WITH_AS((void)arch::select_arch("avx1024"), doctest::Contains("VITC_ARCH=avx1024"),
                         vitc::ArgumentError);
  }

  TEST_CASE("arch: best_arch reads VITC_ARCH") {
    const char* old = std::getenv("VITC_ARCH");
    const std::string saved = old ? old : "";
    setenv("VITC_ARCH", "scalar", 1);
    CHECK(arch::best_arch() == ArchId::kScalar);
    setenv("VITC_ARCH", "bogus", 1);
    CHECK_THROWS_AS((void)arch::best_arch(), vitc::ArgumentError);
    if (old)
      setenv("VITC_ARCH", saved.c_str(), 1);
    else
      unsetenv("VITC_ARCH");
  }

  TEST_CASE("arch: dispatch calls f with the tag of the id") {
    CHECK(arch::dispatch(ArchId::kScalar, TagName{}) == "Scalar");
    if (arch::is_available(ArchId::kXsimd))
      CHECK(arch::dispatch(ArchId::kXsimd, TagName{}) == "Xsimd");
    if (arch::is_available(ArchId::kAvx2))
      CHECK(arch::dispatch(ArchId::kAvx2, TagName{}) == "Avx2");
    if (arch::is_available(ArchId::kAvx512Vnni))
      CHECK(arch::dispatch(ArchId::kAvx512Vnni, TagName{}) == "Avx512Vnni");
  }

  // ruy's covered-paths idea: a build that silently lost a SIMD path fails here instead of
  // passing every bit-exactness test on the scalar path alone.
  TEST_CASE("arch: every path this build and CPU should have is present") {
    const vitc::CpuFeatures& f = vitc::cpu_features();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    CHECK(VITC_HAVE_X86_TARGET_KERNELS == 1);
    CHECK(arch::Avx2::available() == (f.avx2 && f.fma));
    CHECK(arch::Avx512Vnni::available() ==
          (f.avx2 && f.fma && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512vnni));
#endif
#if defined(__AVX512BW__)
    CHECK(std::is_same_v<xsimd::default_arch, xsimd::avx512bw>);
#elif defined(__AVX2__)
    CHECK(xsimd::default_arch::version() >= xsimd::avx2::version());
#elif defined(__aarch64__)
    CHECK(std::is_same_v<xsimd::default_arch, xsimd::neon64>);
#endif
    CHECK(arch::XsimdNative::available());
    // CI names the paths it requires, e.g. VITC_REQUIRE_ARCHS=xsimd,avx2,vnni.
    if (const char* required = std::getenv("VITC_REQUIRE_ARCHS")) {
      const std::string list = std::string(required) + ",";
      std::size_t start = 0;
      for (std::size_t comma; (comma = list.find(',', start)) != std::string::npos;
           start = comma + 1) {
        const std::string name = list.substr(start, comma - start);
        if (name.empty()) continue;
        CAPTURE(name);
        bool found = false;
        for (ArchId id : {ArchId::kScalar, ArchId::kXsimd, ArchId::kAvx2, ArchId::kAvx512Vnni})
          if (arch::arch_name(id) == name) found = arch::is_available(id);
        CHECK(found);
      }
    }
    (void)f;
  }
}
