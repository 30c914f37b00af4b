// SPDX-License-Identifier: Apache-2.0
#pragma once
// Output stages: what an integer GEMM does with each int32 accumulator before storing it.
//
// Why a pipeline: a quantized layer rarely wants raw int32. It adds a bias, rescales to the next
// layer's int8 scale, adds that layer's zero point, clamps (a fused ReLU, or the int8 range) and
// narrows; or it dequantizes to float for a float consumer. Doing this while the accumulator is
// still in registers or L1 saves a pass over C. As in gemmlowp (public/output_stages.h), the
// pipeline is a std::tuple of plain stage structs chosen at compile time, applied left to right:
//
//   std::tuple<OutputBiasAdd, OutputRequantize, OutputAddZeroPoint, OutputSaturatingCast<int8_t>>
//
// The empty tuple (RawInt32) stores the accumulators. Each stage maps the value v of output
// column n (0-based in C) to a new value; the exact formula of each is in its comment. int32
// additions wrap modulo 2^32 (they never do for sane quantization parameters, and wrapping is what
// every SIMD path does too). Stages holding per-column arrays keep a std::span, and validate(n)
// checks at the GEMM's entry point that it covers the n columns of C (ArgumentError otherwise).
//
// The pipeline's output type must equal C's element type (static_assert in the GEMM entry):
// int32_t when the last type-changing stage is absent, T after OutputSaturatingCast<T>, float
// after a dequantize stage. Stages after a dequantize stage are not defined.
//
// Stages are pure functions of (v, n): they hold no state, allocate nothing and are noexcept, so
// evaluating C in any order or on any thread gives the same result.

#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/fixed_point.hpp"

namespace vitc::kernels {

namespace detail {
[[nodiscard]] constexpr std::int32_t wrapping_add(std::int32_t a, std::int32_t b) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) + static_cast<std::uint32_t>(b));
}
inline void check_span_covers(std::size_t size, Index n, const char* stage) {
  if (static_cast<Index>(size) < n)
    VITC_THROW(ArgumentError(std::string(stage) + ": " + std::to_string(size) +
                             " per-channel values for " + std::to_string(n) + " output columns"));
}
}  // namespace detail

// v + bias[n] (int32, wrapping).
struct OutputBiasAdd {
  std::span<const std::int32_t> bias;
  void validate(Index n) const { detail::check_span_covers(bias.size(), n, "OutputBiasAdd.bias"); }
  [[nodiscard]] std::int32_t operator()(std::int32_t v, Index n) const noexcept {
    return detail::wrapping_add(v, bias[static_cast<std::size_t>(n)]);
  }
};

// multiply_by_fixed_point(v, multiplier) (kernels/fixed_point.hpp), one multiplier for all of C.
struct OutputRequantize {
  FixedPointMultiplier multiplier;
  void validate(Index /*n*/) const {}
  [[nodiscard]] std::int32_t operator()(std::int32_t v, Index /*n*/) const noexcept {
    return multiply_by_fixed_point(v, multiplier);
  }
};

// multiply_by_fixed_point(v, multipliers[n]): per output channel.
struct OutputRequantizePerChannel {
  std::span<const FixedPointMultiplier> multipliers;
  void validate(Index n) const {
    detail::check_span_covers(multipliers.size(), n, "OutputRequantizePerChannel.multipliers");
  }
  [[nodiscard]] std::int32_t operator()(std::int32_t v, Index n) const noexcept {
    return multiply_by_fixed_point(v, multipliers[static_cast<std::size_t>(n)]);
  }
};

// v + zero_point (int32, wrapping): the output's zero point, added after requantization.
struct OutputAddZeroPoint {
  std::int32_t zero_point = 0;
  void validate(Index /*n*/) const {}
  [[nodiscard]] std::int32_t operator()(std::int32_t v, Index /*n*/) const noexcept {
    return detail::wrapping_add(v, zero_point);
  }
};

// min(max(v, min), max). Requires min <= max (validate throws otherwise).
struct OutputClamp {
  std::int32_t min = std::numeric_limits<std::int32_t>::min();
  std::int32_t max = std::numeric_limits<std::int32_t>::max();
  void validate(Index /*n*/) const {
    if (min > max) VITC_THROW(ArgumentError("OutputClamp: min > max"));
  }
  [[nodiscard]] std::int32_t operator()(std::int32_t v, Index /*n*/) const noexcept {
    return v < min ? min : (v > max ? max : v);
  }
};

// Saturating narrowing: T(min(max(v, T's lowest), T's max)) for T = int8_t, uint8_t or int16_t.
template <class T>
struct OutputSaturatingCast {
  static_assert(std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t> ||
                    std::is_same_v<T, std::int16_t>,
                "OutputSaturatingCast narrows int32 to int8_t, uint8_t or int16_t");
  void validate(Index /*n*/) const {}
  [[nodiscard]] T operator()(std::int32_t v, Index /*n*/) const noexcept {
    constexpr std::int32_t lo = std::numeric_limits<T>::lowest();
    constexpr std::int32_t hi = std::numeric_limits<T>::max();
    return static_cast<T>(v < lo ? lo : (v > hi ? hi : v));
  }
};

// float(v) · scale, each operation rounded to nearest float (IEEE binary32).
struct OutputDequantize {
  float scale = 1.0f;
  void validate(Index /*n*/) const {}
  [[nodiscard]] float operator()(std::int32_t v, Index /*n*/) const noexcept {
    return static_cast<float>(v) * scale;
  }
};

// float(v) · scales[n].
struct OutputDequantizePerChannel {
  std::span<const float> scales;
  void validate(Index n) const {
    detail::check_span_covers(scales.size(), n, "OutputDequantizePerChannel.scales");
  }
  [[nodiscard]] float operator()(std::int32_t v, Index n) const noexcept {
    return static_cast<float>(v) * scales[static_cast<std::size_t>(n)];
  }
};

// The raw accumulators.
using RawInt32 = std::tuple<>;

// A stage maps (int32 value, column) to a value and validates itself against C's column count.
template <class S>
concept OutputStage = requires(const S& s, std::int32_t v, Index n) {
  s(v, n);
  s.validate(n);
};

namespace detail {
// Carries a value through a left fold over the stages: (Carrier{v} | s0 | s1 | ...).value.
template <class V>
struct StageCarrier {
  V value;
  Index n;
};
template <class V, class S>
[[nodiscard]] constexpr auto operator|(StageCarrier<V> c, const S& stage) noexcept {
  static_assert(std::is_same_v<V, std::int32_t>,
                "an output stage receives a value that is no longer int32: stages after a "
                "narrowing or dequantize stage are not defined");
  using R = decltype(stage(c.value, c.n));
  return StageCarrier<R>{stage(c.value, c.n), c.n};
}

template <class Pipeline>
struct IsPipeline : std::false_type {};
template <class... S>
struct IsPipeline<std::tuple<S...>> : std::bool_constant<(OutputStage<S> && ...)> {};
}  // namespace detail

template <class P>
concept OutputPipeline = detail::IsPipeline<P>::value;

// The value of output column n for accumulator v after every stage of `pipeline`.
template <class... S>
[[nodiscard]] constexpr auto eval_pipeline(const std::tuple<S...>& pipeline, std::int32_t v,
                                           Index n) noexcept {
  return std::apply(
      [&](const S&... stages) {
        return (detail::StageCarrier<std::int32_t>{v, n} | ... | stages).value;
      },
      pipeline);
}

template <OutputPipeline P>
using pipeline_output_t =
    decltype(eval_pipeline(std::declval<const P&>(), std::int32_t{}, Index{}));

// Checks every stage's parameters against C's column count n (throws ArgumentError).
template <class... S>
void validate_pipeline(const std::tuple<S...>& pipeline, Index n) {
  std::apply([&](const S&... stages) { (stages.validate(n), ...); }, pipeline);
}

}  // namespace vitc::kernels
