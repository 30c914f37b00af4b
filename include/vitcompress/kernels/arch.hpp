// SPDX-License-Identifier: Apache-2.0
#pragma once
// Architecture tags shared by every kernel family, and run-time dispatch among them.
//
// Why tags: a kernel is a template on its arch tag, `kernel(arch::Avx2{}, ...)`, so that every
// function touching SIMD is a distinct instantiation per arch. Two TUs built with different
// -march flags then never define the same inline symbol differently (ODR, STYLE.md §2.10).
//
//   Scalar         the reference: plain C++, the definition every other path must equal bit for
//                  bit. Always available.
//   Xsimd<A>       the portable path written with xsimd 8.1 batches, instantiated on any xsimd
//                  arch tag compiled into this TU (xsimd::sse4_2, xsimd::avx2, xsimd::avx512bw,
//                  xsimd::neon64...). Its ISA comes from the compile flags (option A).
//   Avx2           raw intrinsics in functions marked __attribute__((target("avx2,..."))), chosen
//   Avx512Vnni     at run time from CPUID (option C): usable from a header-only build without
//                  -march flags. x86 with GCC or Clang only; elsewhere available() is false and
//                  kernels for them are not compiled. Avx512Vnni needs AVX-512 F, BW, DQ, VL and
//                  VNNI (every CPU with VNNI has the others: Cascade Lake, Ice Lake, Zen 4).
//
// XsimdNative is Xsimd<xsimd::default_arch>, the best xsimd arch the compile flags allow
// (-march=native on Zen 4 gives xsimd::avx512bw). Functions that pick it by default take it as a
// defaulted template parameter, `template <class Native = XsimdNative>`, never inside a
// non-template.
//
// Run-time choice: best_arch() returns the fastest available path. The environment variable
// VITC_ARCH=scalar|xsimd|avx2|vnni overrides it (as ruy's RUY_PATHS does); an unknown or
// unavailable value throws vitc::ArgumentError naming VITC_ARCH. dispatch(id, f) calls f(Tag{})
// with the tag of `id`.

#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/cpu_features.hpp"
#include "vitcompress/core/error.hpp"

// VITC_HAVE_X86_TARGET_KERNELS: the raw-intrinsic x86 paths (Avx2, Avx512Vnni) are compiled.
#if !defined(VITC_HAVE_X86_TARGET_KERNELS)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VITC_HAVE_X86_TARGET_KERNELS 1
#else
#define VITC_HAVE_X86_TARGET_KERNELS 0
#endif
#endif

// Target attribute strings for the x86 paths. Every function using their intrinsics carries one;
// a function can inline only callees whose target is a subset of its own.
#define VITC_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,popcnt,f16c")))
#define VITC_TARGET_AVX512VNNI \
  __attribute__((              \
      target("avx2,fma,bmi,bmi2,popcnt,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
// The AVX-512 VNNI set plus VBMI's byte permutes (Ice Lake, Zen 4; not Cascade Lake), for helpers
// that check CpuFeatures::avx512vbmi themselves.
#define VITC_TARGET_AVX512VBMI \
  __attribute__((target(       \
      "avx2,fma,bmi,bmi2,popcnt,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")))

namespace vitc::kernels::arch {

// Not a path: asks a kernel entry point to pick one at run time with best_arch().
struct Auto {
  static constexpr std::string_view kName = "auto";
};

struct Scalar {
  static constexpr std::string_view kName = "scalar";
  [[nodiscard]] static bool available() noexcept { return true; }
};

template <class XsimdArch>
struct Xsimd {
  using xsimd_arch = XsimdArch;
  static constexpr std::string_view kName = "xsimd";
  // Compiled in (the TU's flags enable XsimdArch) and supported by this CPU.
  [[nodiscard]] static bool available() noexcept {
    if constexpr (!XsimdArch::supported()) {
      return false;
    } else {
      static const bool ok = xsimd::available_architectures().best >= XsimdArch::version();
      return ok;
    }
  }
};

using XsimdNative = Xsimd<xsimd::default_arch>;

struct Avx2 {
  static constexpr std::string_view kName = "avx2";
  [[nodiscard]] static bool available() noexcept {
#if VITC_HAVE_X86_TARGET_KERNELS
    const CpuFeatures& f = cpu_features();
    return f.avx2 && f.fma;
#else
    return false;
#endif
  }
};

struct Avx512Vnni {
  static constexpr std::string_view kName = "vnni";
  [[nodiscard]] static bool available() noexcept {
#if VITC_HAVE_X86_TARGET_KERNELS
    const CpuFeatures& f = cpu_features();
    return f.avx2 && f.fma && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512vnni;
#else
    return false;
#endif
  }
};

template <class T>
inline constexpr bool kIsXsimd = false;
template <class A>
inline constexpr bool kIsXsimd<Xsimd<A>> = true;

// Ordered from slowest to fastest; best_arch() returns the highest available.
enum class ArchId : int { kScalar = 0, kXsimd = 1, kAvx2 = 2, kAvx512Vnni = 3 };

[[nodiscard]] constexpr std::string_view arch_name(ArchId id) noexcept {
  switch (id) {
    case ArchId::kScalar:
      return Scalar::kName;
    case ArchId::kXsimd:
      return "xsimd";
    case ArchId::kAvx2:
      return Avx2::kName;
    case ArchId::kAvx512Vnni:
      return Avx512Vnni::kName;
  }
  return "unknown";
}

template <class Tag>
inline constexpr ArchId kArchIdOf = Tag::kArchIdIsMissing;  // every tag below has its own id
template <>
inline constexpr ArchId kArchIdOf<Scalar> = ArchId::kScalar;
template <class A>
inline constexpr ArchId kArchIdOf<Xsimd<A>> = ArchId::kXsimd;
template <>
inline constexpr ArchId kArchIdOf<Avx2> = ArchId::kAvx2;
template <>
inline constexpr ArchId kArchIdOf<Avx512Vnni> = ArchId::kAvx512Vnni;

// Whether a kernel entry point can honour the path tag Arch here: Auto always can (it picks an
// available path), a forced tag when its path is compiled in and the CPU has it.
template <class Arch>
[[nodiscard]] bool runnable() noexcept {
  if constexpr (std::is_same_v<Arch, Auto>)
    return true;
  else
    return Arch::available();
}

// Whether path `id` is compiled into this TU and runs on this CPU.
template <class Native = XsimdNative>
[[nodiscard]] bool is_available(ArchId id) noexcept {
  switch (id) {
    case ArchId::kScalar:
      return true;
    case ArchId::kXsimd:
      return Native::available();
    case ArchId::kAvx2:
      return Avx2::available();
    case ArchId::kAvx512Vnni:
      return Avx512Vnni::available();
  }
  return false;
}

// The arch named by `value` (a VITC_ARCH value), or the fastest available one when `value` is
// null or empty. Throws ArgumentError for an unknown name or a path this build/CPU cannot run.
template <class Native = XsimdNative>
[[nodiscard]] ArchId select_arch(const char* value) {
  if (value == nullptr || *value == '\0') {
    for (ArchId id : {ArchId::kAvx512Vnni, ArchId::kAvx2, ArchId::kXsimd})
      if (is_available<Native>(id)) return id;
    return ArchId::kScalar;
  }
  const std::string_view v(value);
  for (ArchId id : {ArchId::kScalar, ArchId::kXsimd, ArchId::kAvx2, ArchId::kAvx512Vnni}) {
    if (v != arch_name(id)) continue;
    if (!is_available<Native>(id))
      VITC_THROW(ArgumentError("VITC_ARCH=" + std::string(v) +
                               ": that kernel path is not available on this build or CPU"));
    return id;
  }
  VITC_THROW(ArgumentError("VITC_ARCH=" + std::string(v) +
                           ": unknown kernel path (expected scalar, xsimd, avx2 or vnni)"));
}

// The fastest available path, or the one VITC_ARCH names. Reads the environment on every call.
template <class Native = XsimdNative>
[[nodiscard]] ArchId best_arch() {
  return select_arch<Native>(std::getenv("VITC_ARCH"));
}

// Calls f(Tag{}) with the tag of `id` and returns its result. `id` must be available
// (is_available); a path not compiled into this TU falls back to Scalar, which is only reachable
// by violating that contract.
template <class Native = XsimdNative, class F>
decltype(auto) dispatch(ArchId id, F&& f) {
  VITC_DCHECK(is_available<Native>(id));
  switch (id) {
    case ArchId::kXsimd:
      if constexpr (Native::xsimd_arch::supported()) return std::forward<F>(f)(Native{});
      break;
    case ArchId::kAvx2:
#if VITC_HAVE_X86_TARGET_KERNELS
      return std::forward<F>(f)(Avx2{});
#else
      break;
#endif
    case ArchId::kAvx512Vnni:
#if VITC_HAVE_X86_TARGET_KERNELS
      return std::forward<F>(f)(Avx512Vnni{});
#else
      break;
#endif
    case ArchId::kScalar:
      break;
  }
  return std::forward<F>(f)(Scalar{});
}

}  // namespace vitc::kernels::arch

// The arch tags compiled into this TU, for doctest's TEST_CASE_TEMPLATE. Tests skip (with a
// MESSAGE) the tags whose available() is false on the running CPU.
#if VITC_HAVE_X86_TARGET_KERNELS
#define VITC_KERNEL_ARCH_TAGS                                                               \
  vitc::kernels::arch::Scalar, vitc::kernels::arch::XsimdNative, vitc::kernels::arch::Avx2, \
      vitc::kernels::arch::Avx512Vnni
#else
#define VITC_KERNEL_ARCH_TAGS vitc::kernels::arch::Scalar, vitc::kernels::arch::XsimdNative
#endif
