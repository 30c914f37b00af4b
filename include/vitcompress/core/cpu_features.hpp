// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the CPU running this process can execute, detected once at first use.
//
// Kernels with raw-intrinsic paths (kernels/arch.hpp) ask here at run time instead of trusting the
// compile flags, so a header-only build without -march still uses AVX2/VNNI where present
// (STYLE.md §2.10 option C). A flag is true only when both the CPU and the OS support it: the AVX
// and AVX-512 flags also require the OS to save the wider registers (XGETBV), as a kernel that
// runs otherwise would fault.
//
// x86: CPUID leaves 1 and 7 (subleaves 0 and 1) plus XGETBV(0), read directly rather than through
//      __builtin_cpu_supports, because GCC and Clang differ in which names they know (avxvnni).
// aarch64: getauxval(AT_HWCAP) (Linux); NEON (ASIMD) is architectural, dotprod is HWCAP_ASIMDDP.
// Elsewhere every flag is false.
//
// Thread safety: cpu_features() may be called from any thread; the first call initializes a
// function-local static (thread-safe since C++11) and later calls only read it.

#if defined(__x86_64__) || defined(__i386__)
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#define VITC_CPU_X86_CPUID 1
#endif
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#define VITC_CPU_AARCH64_HWCAP 1
#endif

namespace vitc {

struct CpuFeatures {
  bool sse41 = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512vnni = false;  // EVEX vpdpbusd (AVX512_VNNI)
  bool avx512vbmi = false;  // byte permutes vpermb / vpermi2b (AVX512_VBMI)
  bool avxvnni = false;     // VEX-encoded vpdpbusd on 256-bit registers (AVX-VNNI)
  bool neon = false;
  bool neon_dotprod = false;  // sdot/udot (FEAT_DotProd)
};

namespace detail {

#if defined(VITC_CPU_X86_CPUID)
inline void cpuid(unsigned leaf, unsigned subleaf, unsigned (&r)[4]) noexcept {
  __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
}

// XCR0: which register states the OS saves on a context switch.
inline unsigned long long xgetbv0() noexcept {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

inline CpuFeatures detect_cpu_features() noexcept {
  CpuFeatures f;
#if defined(VITC_CPU_X86_CPUID)
  auto bit = [](unsigned reg, int b) { return ((reg >> b) & 1u) != 0; };
  unsigned r[4] = {0, 0, 0, 0};
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  if (max_leaf < 1) return f;
  cpuid(1, 0, r);
  const unsigned ecx1 = r[2];
  f.sse41 = bit(ecx1, 19);
  const bool osxsave = bit(ecx1, 27), avx = bit(ecx1, 28);
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;    // XMM and YMM state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;  // plus opmask, ZMM_Hi256, Hi16_ZMM
  const bool have_avx = avx && os_ymm;
  f.fma = have_avx && bit(ecx1, 12);
  f.f16c = have_avx && bit(ecx1, 29);
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    const unsigned ebx7 = r[1], ecx7 = r[2], max_sub7 = r[0];
    f.avx2 = have_avx && bit(ebx7, 5);
    f.avx512f = os_zmm && bit(ebx7, 16);
    f.avx512bw = f.avx512f && bit(ebx7, 30);
    f.avx512dq = f.avx512f && bit(ebx7, 17);
    f.avx512vl = f.avx512f && bit(ebx7, 31);
    f.avx512vnni = f.avx512f && bit(ecx7, 11);
    f.avx512vbmi = f.avx512f && bit(ecx7, 1);
    if (max_sub7 >= 1) {
      cpuid(7, 1, r);
      f.avxvnni = have_avx && bit(r[0], 4);
    }
  }
#elif defined(VITC_CPU_AARCH64_HWCAP)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.neon = (hwcap & (1ul << 1)) != 0;           // HWCAP_ASIMD
  f.neon_dotprod = (hwcap & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
#endif
  return f;
}

}  // namespace detail

// The features of this CPU, detected on the first call.
[[nodiscard]] inline const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = detail::detect_cpu_features();
  return features;
}

}  // namespace vitc
