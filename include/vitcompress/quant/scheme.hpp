// SPDX-License-Identifier: Apache-2.0
#pragma once
// Quantization schemes: how one real number becomes an integer code and back.
//
// Why: every quantized tensor of a ViT is stored or computed as small integers q and one or a few
// real scales s; the scheme fixes the map x -> q (quantize), q -> x̂ (dequantize) and its range.
// Fake quantization, x -> x̂ = dequantize(quantize(x)), is what the simulated quantized model
// computes in float, and what quantization-aware training differentiates through.
//
// A scheme is an empty tag carrying a compile-time SchemeSpec (kind + bits); its parameters are the
// plain aggregate QuantParams {scale, zero_point} (data and behaviour are separate, STYLE §2.3).
// The exact formulas, b = bits, round = round half to even (std::nearbyint in the default
// floating-point environment, as ONNX QuantizeLinear), clamp(v, lo, hi) = min(max(v, lo), hi):
//
//   Symmetric<b>    signed, zero point 0, RESTRICTED range q in [−(2^(b−1)−1), 2^(b−1)−1]
//                   (int8: [−127, 127]; int4: [−7, 7]). The code −2^(b−1) is never produced:
//                   −128 has no negation in int8, which breaks the sign trick of s8×s8 dot
//                   products (|a| · sign(b, a) with _mm256_sign_epi8, ANCHORS.md §4.2), and
//                   (−128)·(−128) = 2^14 twice overflows an int16 pair sum; the range is also
//                   symmetric about 0 (negating a tensor negates its codes). The cost is one of
//                   the 2^b levels.
//                     q = clamp(round(x / s), −qmax, qmax),   x̂ = s·q
//   Asymmetric<b>   unsigned with zero point z in [0, 2^b−1]:
//                     q = clamp(round(x / s) + z, 0, 2^b−1),  x̂ = s·(q − z)
//                   x = 0 maps to q = z exactly, so zero is exactly representable (zero padding,
//                   ReLU/GELU zeros, attention masks stay exact).
//   Log2<b>         non-negative, power-of-two levels (FQ-ViT's Log2 quantizer / Log-Int-Softmax,
//                   ANCHORS.md §3.3) for long-tailed data such as post-softmax attention:
//                     e = round(−log2(x / s));  q = max(e, 0) if e <= 2^b−1, else ZERO;
//                     x̂ = s·2^(−q), and 0 for ZERO or x <= 0.
//                   Levels are s, s/2, ..., s·2^(−(2^b−1)); values below the last level (and
//                   non-positive values) become exactly 0. ZERO is stored as the code −1, so a
//                   b-bit log2 tensor holds 2^b levels plus zero (FQ-ViT keeps a mask for it).
//                   Levels below float's range (s·2^−q < 2^−149, only reachable with 8 bits)
//                   dequantize to 0 in float; 4 bits, the usual width, reach s·2^−15.
//   LogSqrt2<b>     the √2-base variant (RepQ-ViT's LogSqrt2Quantizer): levels s·2^(−q/2),
//                     e = round(−2·log2(x / s)), same clamp and ZERO rule,
//                     x̂ = s·2^(−ceil(q/2))·(q odd ? √2 : 1)
//                   (the form an integer engine uses: a shift, and one multiply for odd codes).
//   Fp16            IEEE binary16, round to nearest even (core/float16.hpp), PQV-Mobile's FP16
//                   path; the "code" is the 16-bit pattern, QuantParams are ignored.
//
// Bits: integer schemes accept 2..8 bits. In a template (Symmetric<9>) that is a compile-time
// error through the ValidBits constraint:
//     template <int Bits> requires ValidBits<Bits> struct Symmetric;   // Symmetric<9>: error
// and where bits arrive at run time (a SchemeSpec from a config file) SchemeSpec::validate()
// throws ArgumentError.
//
// Scales: params_from_range() derives QuantParams from an observed range [lo, hi]:
//   Symmetric   s = max(|lo|, |hi|) / qmax
//   Asymmetric  lo' = min(lo, 0), hi' = max(hi, 0), s = (hi' − lo') / (2^b − 1),
//               z = clamp(round(−lo' / s), 0, 2^b − 1)
//   Log2, √2    s = hi (the largest value is the first level)
// A degenerate range (all zeros) gives s = 1. The clip range of a parameter set, the interval in
// which quantization error is at most half a step, is [s·(qmin − z), s·(qmax − z)] for the affine
// schemes (clip_range()).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/float16.hpp"

namespace vitc::quant {

inline constexpr int kMinBits = 2;
inline constexpr int kMaxBits = 8;

// Integer bit widths the library supports.
template <int Bits>
concept ValidBits = Bits >= kMinBits&& Bits <= kMaxBits;

enum class SchemeKind : int {
  kNone,        // no quantization: x̂ = x (a float site in a mixed configuration)
  kSymmetric,   // signed, restricted range, zero point 0
  kAsymmetric,  // unsigned with zero point
  kLog2,        // power-of-two levels
  kLogSqrt2,    // √2-power levels
  kFp16,        // IEEE half
};

[[nodiscard]] inline const char* to_string(SchemeKind kind) noexcept {
  switch (kind) {
    case SchemeKind::kNone:
      return "none";
    case SchemeKind::kSymmetric:
      return "symmetric";
    case SchemeKind::kAsymmetric:
      return "asymmetric";
    case SchemeKind::kLog2:
      return "log2";
    case SchemeKind::kLogSqrt2:
      return "log_sqrt2";
    case SchemeKind::kFp16:
      return "fp16";
  }
  return "unknown";
}

// The scheme named `name` (as to_string() spells it); ArgumentError naming `what` otherwise.
[[nodiscard]] inline SchemeKind scheme_kind_from_string(const std::string& name,
                                                        const std::string& what = "scheme") {
  for (SchemeKind k : {SchemeKind::kNone, SchemeKind::kSymmetric, SchemeKind::kAsymmetric,
                       SchemeKind::kLog2, SchemeKind::kLogSqrt2, SchemeKind::kFp16})
    if (name == to_string(k)) return k;
  VITC_THROW(ArgumentError(what + ": unknown scheme '" + name +
                           "' (none, symmetric, asymmetric, log2, log_sqrt2, fp16)"));
}

// A scheme chosen at run time: kind and bits. Bits are ignored for kNone (32) and kFp16 (16).
struct SchemeSpec {
  SchemeKind kind = SchemeKind::kNone;
  int bits = 8;

  [[nodiscard]] constexpr bool is_integer() const noexcept {
    return kind == SchemeKind::kSymmetric || kind == SchemeKind::kAsymmetric ||
           kind == SchemeKind::kLog2 || kind == SchemeKind::kLogSqrt2;
  }
  [[nodiscard]] constexpr bool is_log() const noexcept {
    return kind == SchemeKind::kLog2 || kind == SchemeKind::kLogSqrt2;
  }
  // Smallest and largest code (log schemes: levels only; ZERO is −1).
  [[nodiscard]] constexpr std::int32_t qmin() const noexcept {
    return kind == SchemeKind::kSymmetric ? -((1 << (bits - 1)) - 1) : 0;
  }
  [[nodiscard]] constexpr std::int32_t qmax() const noexcept {
    if (kind == SchemeKind::kSymmetric) return (1 << (bits - 1)) - 1;
    if (kind == SchemeKind::kFp16) return 0xffff;
    return (1 << bits) - 1;
  }
  // Bits of storage per value (16 for fp16, 32 for none).
  [[nodiscard]] constexpr int storage_bits() const noexcept {
    return kind == SchemeKind::kNone ? 32 : (kind == SchemeKind::kFp16 ? 16 : bits);
  }
  // Throws ArgumentError naming `what` when an integer scheme's bits are outside [2, 8].
  void validate(const std::string& what) const {
    if (is_integer() && (bits < kMinBits || bits > kMaxBits))
      VITC_THROW(ArgumentError(what + ": " + to_string(kind) + " quantization with " +
                               std::to_string(bits) + " bits; supported are " +
                               std::to_string(kMinBits) + " to " + std::to_string(kMaxBits)));
  }
  friend constexpr bool operator==(const SchemeSpec&, const SchemeSpec&) = default;
};

// Scheme tags: empty types carrying their SchemeSpec, for code that fixes the scheme at compile
// time (Quantizer<Symmetric<8>, PerChannel>).
template <int Bits>
requires ValidBits<Bits>
struct Symmetric {
  static constexpr SchemeSpec kSpec{SchemeKind::kSymmetric, Bits};
};
template <int Bits>
requires ValidBits<Bits>
struct Asymmetric {
  static constexpr SchemeSpec kSpec{SchemeKind::kAsymmetric, Bits};
};
template <int Bits>
requires ValidBits<Bits>
struct Log2 {
  static constexpr SchemeSpec kSpec{SchemeKind::kLog2, Bits};
};
template <int Bits>
requires ValidBits<Bits>
struct LogSqrt2 {
  static constexpr SchemeSpec kSpec{SchemeKind::kLogSqrt2, Bits};
};
struct Fp16 {
  static constexpr SchemeSpec kSpec{SchemeKind::kFp16, 16};
};

// A scheme tag: a type with a constexpr SchemeSpec kSpec.
template <class S>
concept QuantScheme = requires {
  { S::kSpec } -> std::convertible_to<SchemeSpec>;
};

// Parameters of one quantization group (a tensor, a channel or a group of a channel).
struct QuantParams {
  float scale = 1.0f;           // s > 0, finite
  std::int32_t zero_point = 0;  // z: 0 except for Asymmetric
  friend constexpr bool operator==(const QuantParams&, const QuantParams&) = default;
};

// A closed real interval, as observers report ranges.
struct Range {
  float lo = 0.0f;
  float hi = 0.0f;
};

// The code log schemes use for an exact zero.
inline constexpr std::int32_t kLogZeroCode = -1;

namespace detail {

// Scalar formulas, one specialization per kind (the definition every loop uses).
template <SchemeKind K>
struct SchemeImpl;

template <>
struct SchemeImpl<SchemeKind::kNone> {
  static std::int32_t quantize(float, QuantParams, int) noexcept { return 0; }
  static float dequantize(std::int32_t, QuantParams, int) noexcept { return 0.0f; }
  static float fake(float x, QuantParams, int) noexcept { return x; }
};

template <>
struct SchemeImpl<SchemeKind::kSymmetric> {
  static std::int32_t quantize(float x, QuantParams p, int bits) noexcept {
    const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
    const float r = std::nearbyint(x / p.scale);
    return static_cast<std::int32_t>(r < -qmax ? -qmax : (r > qmax ? qmax : r));
  }
  static float dequantize(std::int32_t q, QuantParams p, int) noexcept {
    return p.scale * static_cast<float>(q);
  }
  static float fake(float x, QuantParams p, int bits) noexcept {
    return dequantize(quantize(x, p, bits), p, bits);
  }
};

template <>
struct SchemeImpl<SchemeKind::kAsymmetric> {
  static std::int32_t quantize(float x, QuantParams p, int bits) noexcept {
    const float qmax = static_cast<float>((1 << bits) - 1);
    // round(x / s) + z: the zero point is added exactly, after rounding.
    const float r = std::nearbyint(x / p.scale) + static_cast<float>(p.zero_point);
    return static_cast<std::int32_t>(r < 0.0f ? 0.0f : (r > qmax ? qmax : r));
  }
  static float dequantize(std::int32_t q, QuantParams p, int) noexcept {
    return p.scale * static_cast<float>(q - p.zero_point);
  }
  static float fake(float x, QuantParams p, int bits) noexcept {
    return dequantize(quantize(x, p, bits), p, bits);
  }
};

// Steps = 1: base 2; Steps = 2: base √2.
template <int Steps>
struct LogImpl {
  static std::int32_t quantize(float x, QuantParams p, int bits) noexcept {
    if (!(x > 0.0f)) return kLogZeroCode;
    const float e = std::nearbyint(-static_cast<float>(Steps) * std::log2(x / p.scale));
    const float last = static_cast<float>((1 << bits) - 1);
    if (e > last) return kLogZeroCode;
    return e < 0.0f ? 0 : static_cast<std::int32_t>(e);
  }
  static float dequantize(std::int32_t q, QuantParams p, int) noexcept {
    if (q < 0) return 0.0f;
    if constexpr (Steps == 1) {
      return std::ldexp(p.scale, -q);
    } else {
      const float level = std::ldexp(p.scale, -((q + 1) / 2));
      return (q & 1) ? level * 1.41421356237309504880f : level;
    }
  }
  static float fake(float x, QuantParams p, int bits) noexcept {
    return dequantize(quantize(x, p, bits), p, bits);
  }
};

template <>
struct SchemeImpl<SchemeKind::kLog2> : LogImpl<1> {};
template <>
struct SchemeImpl<SchemeKind::kLogSqrt2> : LogImpl<2> {};

template <>
struct SchemeImpl<SchemeKind::kFp16> {
  static std::int32_t quantize(float x, QuantParams, int) noexcept {
    return static_cast<std::int32_t>(float_to_half_bits(x));
  }
  static float dequantize(std::int32_t q, QuantParams, int) noexcept {
    return half_bits_to_float(static_cast<std::uint16_t>(q));
  }
  static float fake(float x, QuantParams, int) noexcept {
    return half_bits_to_float(float_to_half_bits(x));
  }
};

}  // namespace detail

// Calls f(std::integral_constant<SchemeKind, K>{}) for the runtime kind: the one switch that
// turns a runtime scheme into a compile-time one outside every loop.
template <class F>
decltype(auto) visit_scheme(SchemeKind kind, F&& f) {
  using K = SchemeKind;
  switch (kind) {
    case K::kSymmetric:
      return f(std::integral_constant<K, K::kSymmetric>{});
    case K::kAsymmetric:
      return f(std::integral_constant<K, K::kAsymmetric>{});
    case K::kLog2:
      return f(std::integral_constant<K, K::kLog2>{});
    case K::kLogSqrt2:
      return f(std::integral_constant<K, K::kLogSqrt2>{});
    case K::kFp16:
      return f(std::integral_constant<K, K::kFp16>{});
    case K::kNone:
      break;
  }
  return f(std::integral_constant<K, K::kNone>{});
}

// Scalar entry points (validated specs assumed; see SchemeSpec::validate()).
[[nodiscard]] inline std::int32_t quantize_value(float x, QuantParams p, SchemeSpec s) noexcept {
  return visit_scheme(s.kind, [&](auto k) {
    return detail::SchemeImpl<decltype(k)::value>::quantize(x, p, s.bits);
  });
}
[[nodiscard]] inline float dequantize_value(std::int32_t q, QuantParams p, SchemeSpec s) noexcept {
  return visit_scheme(s.kind, [&](auto k) {
    return detail::SchemeImpl<decltype(k)::value>::dequantize(q, p, s.bits);
  });
}
[[nodiscard]] inline float fake_quantize_value(float x, QuantParams p, SchemeSpec s) noexcept {
  return visit_scheme(
      s.kind, [&](auto k) { return detail::SchemeImpl<decltype(k)::value>::fake(x, p, s.bits); });
}

// The interval [s·(qmin − z), s·(qmax − z)] of an affine scheme (Symmetric, Asymmetric), inside
// which |x − x̂| <= s/2; for log schemes [0, s]; for kNone and kFp16 the whole float range.
[[nodiscard]] inline Range clip_range(QuantParams p, SchemeSpec s) noexcept {
  if (s.kind == SchemeKind::kSymmetric || s.kind == SchemeKind::kAsymmetric)
    return {p.scale * static_cast<float>(s.qmin() - p.zero_point),
            p.scale * static_cast<float>(s.qmax() - p.zero_point)};
  if (s.is_log()) return {0.0f, p.scale};
  return {-std::numeric_limits<float>::max(), std::numeric_limits<float>::max()};
}

// QuantParams for data observed in [lo, hi] (see the header comment). Throws ArgumentError naming
// `what` when lo or hi is not finite, lo > hi, or the spec's bits are invalid.
[[nodiscard]] inline QuantParams params_from_range(Range r, SchemeSpec s,
                                                   const std::string& what = "range") {
  s.validate(what);
  if (!std::isfinite(r.lo) || !std::isfinite(r.hi))
    VITC_THROW(ArgumentError(what + ": the observed range is not finite (NaN or infinity in "
                                    "the data)"));
  if (r.lo > r.hi) VITC_THROW(ArgumentError(what + ": the observed range has lo > hi"));
  // Scales below this would overflow x / s for ordinary inputs; treat such ranges as zero.
  constexpr float kMinScale = 1e-30f;
  QuantParams p;
  switch (s.kind) {
    case SchemeKind::kSymmetric: {
      const float amax = std::max(std::abs(r.lo), std::abs(r.hi));
      p.scale = amax / static_cast<float>(s.qmax());
      break;
    }
    case SchemeKind::kAsymmetric: {
      const float lo = std::min(r.lo, 0.0f), hi = std::max(r.hi, 0.0f);
      p.scale = (hi - lo) / static_cast<float>(s.qmax());
      if (p.scale >= kMinScale) {
        const float z = std::nearbyint(-lo / p.scale);
        p.zero_point =
            static_cast<std::int32_t>(std::min(std::max(z, 0.0f), static_cast<float>(s.qmax())));
      }
      break;
    }
    case SchemeKind::kLog2:
    case SchemeKind::kLogSqrt2:
      p.scale = r.hi;
      break;
    case SchemeKind::kNone:
    case SchemeKind::kFp16:
      p.scale = 1.0f;
      break;
  }
  if (!(p.scale >= kMinScale) || !std::isfinite(p.scale)) {
    p.scale = 1.0f;
    p.zero_point = 0;
  }
  return p;
}

}  // namespace vitc::quant
