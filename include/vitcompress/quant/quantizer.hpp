// SPDX-License-Identifier: Apache-2.0
#pragma once
// Quantizer<Scheme, Granularity>: quantize, dequantize and fake-quantize whole tensors.
//
// A quantizer combines a scheme (quant/scheme.hpp: the formula of one value) with a granularity
// (quant/granularity.hpp: which elements share parameters). Its parameters for one tensor are the
// plain aggregate TensorQuantParams: the scheme, the granularity and one scale (and zero point)
// per group. Parameters come from observed ranges (quant/observer.hpp, or calibrate() for the
// min-max of the tensor itself).
//
//   quantize(x, params, codes)      codes[r, c] = quantize_value(x[r, c], params.group(g(r, c)))
//   dequantize(codes, params, y)    y[r, c] = dequantize_value(codes[r, c], params.group(...))
//   fake_quantize(x, params, y)     y = dequantize(quantize(x)), computed without storing codes;
//                                   y may alias x (in-place), and is bit-identical to
//                                   dequantize(quantize(x)).
//
// Contracts (tested): for affine schemes, every x inside clip_range(group) satisfies
// |x − x̂| <= s/2 up to float rounding of x / s and s·q (a few ulp of x); x outside saturates to the
// end level; 0 is reproduced exactly. Log levels are exactly s·2^(−q).
//
// Views may have any strides (the q, k, v column blocks of a fused qkv buffer are strided). Codes
// are written to a view of any integer type Q that holds every code of the scheme: int8_t for
// Symmetric, uint8_t for Asymmetric, int8_t for Log2/LogSqrt2 up to 7 bits (codes 0..127 and −1
// for zero; int16_t for 8 bits), uint16_t for Fp16 (the bit pattern). A Q too narrow is an
// ArgumentError, as is a NaN or infinity in x (the message names the tensor), a parameter count
// that does not match the groups of the shape, or a non-positive scale. Cost: one pass,
// O(rows·cols).
//
// The runtime form is QuantSpec (scheme + granularity as values), used by configurations and the
// simulated ViT; Quantizer<S, G> is the compile-time front end with the same functions, and
// static_asserts its bits (Symmetric<9> does not compile: see ValidBits).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/quant/granularity.hpp"
#include "vitcompress/quant/scheme.hpp"

namespace vitc::quant {

// Scheme and granularity chosen at run time.
struct QuantSpec {
  SchemeSpec scheme;
  GranularitySpec granularity;
  void validate(const std::string& what) const {
    scheme.validate(what);
    granularity.validate(what);
  }
  friend constexpr bool operator==(const QuantSpec&, const QuantSpec&) = default;
};

// Parameters of one quantized tensor: one scale and zero point per group (see granularity.hpp for
// the group numbering). zero_points is all zeros except for Asymmetric.
struct TensorQuantParams {
  SchemeSpec scheme;
  GranularitySpec granularity;
  std::vector<float> scales;
  std::vector<std::int32_t> zero_points;

  [[nodiscard]] QuantParams group(Index g) const noexcept {
    return {scales[static_cast<std::size_t>(g)], zero_points[static_cast<std::size_t>(g)]};
  }
  [[nodiscard]] Index num_groups() const noexcept { return static_cast<Index>(scales.size()); }

  // Throws ArgumentError naming `what` unless the parameters fit a [rows, cols] tensor: valid spec,
  // one finite positive scale and one zero point in the code range per group.
  void validate(Index rows, Index cols, const std::string& what) const {
    QuantSpec{scheme, granularity}.validate(what);
    const Index n = granularity.num_groups(rows, cols);
    if (static_cast<Index>(scales.size()) != n || static_cast<Index>(zero_points.size()) != n)
      VITC_THROW(ArgumentError(what + ": " + std::to_string(scales.size()) + " scales and " +
                               std::to_string(zero_points.size()) + " zero points for " +
                               std::to_string(n) + " groups of a [" + std::to_string(rows) + ", " +
                               std::to_string(cols) + "] tensor"));
    for (std::size_t g = 0; g < scales.size(); ++g) {
      if (!(scales[g] > 0.0f) || !std::isfinite(scales[g]))
        VITC_THROW(ArgumentError(what + ": scale " + std::to_string(g) + " = " +
                                 std::to_string(scales[g]) + " is not finite and positive"));
      if (scheme.is_integer() && !scheme.is_log() &&
          (zero_points[g] < scheme.qmin() || zero_points[g] > scheme.qmax()))
        VITC_THROW(ArgumentError(what + ": zero point " + std::to_string(g) + " = " +
                                 std::to_string(zero_points[g]) + " outside the code range"));
    }
  }
};

// Throws ArgumentError naming `what` if x holds a NaN or an infinity.
template <class T>
void check_finite(const TensorView<const T, 2>& x, const std::string& what) {
  for (Index r = 0; r < x.extent(0); ++r) {
    const T* row = x.data() + r * x.stride(0);
    for (Index c = 0; c < x.extent(1); ++c)
      if (!std::isfinite(row[c * x.stride(1)]))
        VITC_THROW(ArgumentError(what + ": contains a NaN or an infinity (row " +
                                 std::to_string(r) + ", column " + std::to_string(c) + ")"));
  }
}

// Exact minimum and maximum of each group of x (NaN/inf: ArgumentError naming `what`). An empty
// group (a tensor with no elements) gets [0, 0].
inline std::vector<Range> group_ranges(const TensorView<const float, 2>& x,
                                       const GranularitySpec& g, const std::string& what) {
  g.validate(what);
  check_finite(x, what);
  const Index n = g.num_groups(x.extent(0), x.extent(1));
  std::vector<Range> out(static_cast<std::size_t>(n), Range{std::numeric_limits<float>::max(),
                                                            -std::numeric_limits<float>::max()});
  for_each_group_run(g, x.extent(0), x.extent(1), [&](Index r, Index c0, Index c1, Index grp) {
    const float* row = x.data() + r * x.stride(0);
    Range& rg = out[static_cast<std::size_t>(grp)];
    for (Index c = c0; c < c1; ++c) {
      const float v = row[c * x.stride(1)];
      rg.lo = std::min(rg.lo, v);
      rg.hi = std::max(rg.hi, v);
    }
  });
  for (Range& r : out)
    if (r.lo > r.hi) r = {0.0f, 0.0f};
  return out;
}

// Parameters from one range per group (params_from_range for each).
inline TensorQuantParams params_from_ranges(const QuantSpec& spec, std::span<const Range> ranges,
                                            const std::string& what) {
  spec.validate(what);
  TensorQuantParams p{spec.scheme, spec.granularity, {}, {}};
  p.scales.reserve(ranges.size());
  p.zero_points.reserve(ranges.size());
  for (std::size_t g = 0; g < ranges.size(); ++g) {
    const QuantParams q = params_from_range(ranges[g], spec.scheme, what);
    p.scales.push_back(q.scale);
    p.zero_points.push_back(q.zero_point);
  }
  return p;
}

namespace detail {

template <class Q>
bool codes_fit(const SchemeSpec& s) noexcept {
  if (s.kind == SchemeKind::kNone) return false;
  const std::int64_t lo = s.is_log() ? kLogZeroCode : s.qmin();
  const std::int64_t hi = s.qmax();
  return lo >= std::numeric_limits<Q>::min() && hi <= std::numeric_limits<Q>::max();
}

template <class Q>
void check_codes_fit(const SchemeSpec& s, const std::string& what) {
  if (!codes_fit<Q>(s))
    VITC_THROW(ArgumentError(what + ": the codes of " + to_string(s.kind) + " with " +
                             std::to_string(s.bits) + " bits do not fit the code type"));
}

template <class A, class B>
void check_same_shape(const TensorView<A, 2>& a, const TensorView<B, 2>& b,
                      const std::string& what) {
  if (a.shape() != b.shape())
    VITC_THROW(ShapeError(what + ": input shape " + vitc::detail::shape_string(a.shape()) +
                          " and output shape " + vitc::detail::shape_string(b.shape()) +
                          " differ"));
}

// The element loop: f(Impl, QuantParams, bits, in_ptr_at_c, out_ptr_at_c) over every run.
template <class In, class Out, class Body>
void quant_loop(const TensorView<In, 2>& in, const TensorView<Out, 2>& out,
                const TensorQuantParams& p, Body&& body) {
  const Index rows = in.extent(0), cols = in.extent(1);
  const Index is = in.stride(1), os = out.stride(1);
  visit_scheme(p.scheme.kind, [&](auto k) {
    using Impl = SchemeImpl<decltype(k)::value>;
    for_each_group_run(p.granularity, rows, cols, [&](Index r, Index c0, Index c1, Index g) {
      const QuantParams qp = p.group(g);
      const In* src = in.data() + r * in.stride(0);
      Out* dst = out.data() + r * out.stride(0);
      for (Index c = c0; c < c1; ++c) dst[c * os] = body(Impl{}, src[c * is], qp, p.scheme.bits);
    });
  });
}

}  // namespace detail

// codes = quantize(x). See the header comment for Q and the errors.
template <class Q>
requires std::integral<Q>
void quantize(const TensorView<const float, 2>& x, const TensorQuantParams& params,
              const TensorView<Q, 2>& codes, const std::string& what) {
  detail::check_same_shape(x, codes, what);
  params.validate(x.extent(0), x.extent(1), what);
  detail::check_codes_fit<Q>(params.scheme, what);
  check_finite(x, what);
  detail::quant_loop(x, codes, params, [](auto impl, float v, QuantParams qp, int bits) {
    return static_cast<Q>(decltype(impl)::quantize(v, qp, bits));
  });
}

// y = dequantize(codes).
template <class Q>
requires std::integral<Q>
void dequantize(const TensorView<const Q, 2>& codes, const TensorQuantParams& params,
                const TensorView<float, 2>& y, const std::string& what) {
  detail::check_same_shape(codes, y, what);
  params.validate(codes.extent(0), codes.extent(1), what);
  if (params.scheme.kind == SchemeKind::kNone)
    VITC_THROW(ArgumentError(what + ": scheme 'none' has no codes to dequantize"));
  detail::quant_loop(codes, y, params, [](auto impl, Q q, QuantParams qp, int bits) {
    return decltype(impl)::dequantize(static_cast<std::int32_t>(q), qp, bits);
  });
}

// y = dequantize(quantize(x)); y may be x itself.
inline void fake_quantize(const TensorView<const float, 2>& x, const TensorQuantParams& params,
                          const TensorView<float, 2>& y, const std::string& what) {
  detail::check_same_shape(x, y, what);
  params.validate(x.extent(0), x.extent(1), what);
  check_finite(x, what);
  detail::quant_loop(x, y, params, [](auto impl, float v, QuantParams qp, int bits) {
    return decltype(impl)::fake(v, qp, bits);
  });
}

// Owning conveniences.
template <class Q>
[[nodiscard]] Tensor<Q, 2> quantize(const TensorView<const float, 2>& x,
                                    const TensorQuantParams& params, const std::string& what) {
  Tensor<Q, 2> out(x.shape());
  quantize<Q>(x, params, out.view(), what);
  return out;
}
template <class Q>
[[nodiscard]] Tensor<float, 2> dequantize(const TensorView<const Q, 2>& codes,
                                          const TensorQuantParams& params,
                                          const std::string& what) {
  Tensor<float, 2> out(codes.shape());
  dequantize<Q>(codes, params, out.view(), what);
  return out;
}

// Compile-time front end. Scheme: Symmetric<B>, Asymmetric<B>, Log2<B>, LogSqrt2<B>, Fp16 (bits
// checked by their ValidBits constraint). Granularity: PerTensor, PerChannel{axis}, PerGroup<G>.
template <class Scheme, class Granularity>
requires QuantScheme<Scheme> && QuantGranularity<Granularity>
class Quantizer {
 public:
  static constexpr SchemeSpec kScheme = Scheme::kSpec;

  constexpr Quantizer() = default;
  constexpr explicit Quantizer(Granularity granularity) : granularity_(granularity) {}

  [[nodiscard]] constexpr QuantSpec spec() const noexcept {
    return {kScheme, GranularitySpec(granularity_.spec())};
  }

  // Parameters from one observed range per group.
  [[nodiscard]] TensorQuantParams params_from_ranges(std::span<const Range> ranges,
                                                     const std::string& what) const {
    return quant::params_from_ranges(spec(), ranges, what);
  }
  // Parameters from the min-max of each group of x itself (weights, or one calibration tensor).
  [[nodiscard]] TensorQuantParams calibrate(const TensorView<const float, 2>& x,
                                            const std::string& what) const {
    const auto ranges = group_ranges(x, spec().granularity, what);
    return params_from_ranges(ranges, what);
  }

  template <class Q>
  void quantize(const TensorView<const float, 2>& x, const TensorQuantParams& p,
                const TensorView<Q, 2>& codes, const std::string& what) const {
    check_params(p, what);
    quant::quantize<Q>(x, p, codes, what);
  }
  template <class Q>
  void dequantize(const TensorView<const Q, 2>& codes, const TensorQuantParams& p,
                  const TensorView<float, 2>& y, const std::string& what) const {
    check_params(p, what);
    quant::dequantize<Q>(codes, p, y, what);
  }
  void fake_quantize(const TensorView<const float, 2>& x, const TensorQuantParams& p,
                     const TensorView<float, 2>& y, const std::string& what) const {
    check_params(p, what);
    quant::fake_quantize(x, p, y, what);
  }

 private:
  void check_params(const TensorQuantParams& p, const std::string& what) const {
    if (!(p.scheme == kScheme) || !(p.granularity == spec().granularity))
      VITC_THROW(ArgumentError(what + ": parameters were made for another scheme or granularity"));
  }
  Granularity granularity_{};
};

// What the simulated model and the observers need of a quantizer: its runtime spec and
// fake_quantize over a view.
template <class Q>
concept TensorQuantizer = requires(const Q& q, TensorView<const float, 2> x, TensorView<float, 2> y,
                                   const TensorQuantParams& p, const std::string& what) {
  { q.spec() } -> std::convertible_to<QuantSpec>;
  q.fake_quantize(x, p, y, what);
};

}  // namespace vitc::quant
