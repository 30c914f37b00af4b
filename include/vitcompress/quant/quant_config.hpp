// SPDX-License-Identifier: Apache-2.0
#pragma once
// QuantConfig: where and how a ViT is quantized, as plain data.
//
// A quantization POINT is a tensor that is quantized: a weight (named as in timm,
// "blocks.3.mlp.fc1.weight"), or an activation at a hook site of model/vit_hooks.hpp (named
// "blocks.3.fc2_input", or "patch_input", "final_norm_input", "head_input" outside the blocks).
// Each point gets a TensorQuantSpec: scheme and bits, granularity, calibration observer, and for
// the residual-stream / LayerNorm-input sites optionally FQ-ViT's Power-of-Two Factor. A
// configuration gives one spec per weight kind and per hook site, plus overrides by point name
// (per-layer bits), and says whether the remaining parameters (biases, LayerNorm, class token,
// position embedding) stay float32 or become fp16.
//
// Named configurations (QuantConfig::named). "aN" is N-bit activations at every GEMM input. The
// patch embedding and the head stay 8-bit in every integer configuration, as is usual (PackQViT
// keeps its head at 8 bits), except in w7a8: w8a8 with every weight, key and value at 7 bits
// (symmetric codes in [−63, 63], MSE observer), the operands for which the AVX2 int8 GEMM needs
// no widening (vpmaddubsw's pair sums cannot saturate; kernels/detail/gemm_int8_avx2.hpp).
// w4a8-g32 is w4a8 with qkv, proj, fc1 and fc2 scaled per group of 32 along K, each group's scale
// a 4-bit multiple of one step per row (group_scale_bits = 4, quant/group_scales.hpp). Per
// point:
//
// clang-format off
//   point                               fp16  w8a8        w8a8-log2attn  w4a8         w4a8-log2attn  w4a4
//   qkv, proj, fc1, fc2 weights         fp16  sym8 ch mm  sym8 ch mm     sym4 ch mse  sym4 ch mse    sym4 ch mse
//   patch_embed, head weights           fp16  sym8 ch mm  (same in every integer configuration)
//   patch_input, head_input             fp16  asym8 mm    (same in every integer configuration)
//   qkv_input, proj_input, fc1_input,   fp16  asym8 mm    asym8 mm       asym8 mm     asym8 mm       asym4 mse
//     fc2_input, query (A of QKᵀ)
//   key, value (B operands)             fp16  sym8 mm     sym8 mm        sym8 mm      sym8 mm        sym4 mse
//   attention_probs                     fp16  asym8 mm    log2 4-bit     asym8 mm     log2 4-bit     log√2 4-bit
//   block_input, mlp_residual,          fp16  asym8 PTF   asym8 PTF      asym8 PTF    asym8 PTF      asym8 PTF
//     final_norm_input
//   other parameters (biases, norms,    fp16  float32     (float32 in every integer configuration)
//     cls_token, pos_embed)
// clang-format on
//
// (sym = Symmetric, asym = Asymmetric, ch = per output channel, mm = MinMaxObserver, mse =
// MseObserver, PTF = per-tensor asymmetric with power-of-two channel factors, min-max.)
// Post-softmax probabilities are non-negative, so "asym8" there is unsigned with zero point 0. log2
// 4-bit is FQ-ViT's 8/8/4 setting; w4a4 uses RepQ-ViT's log√2 for attention (uniform 4-bit
// probabilities would round almost every probability of a 17-token row to 0). In w4a4 the residual
// stream and LayerNorm inputs stay at 8 bits (I-ViT keeps them at 16): the integer residual add and
// LayerNorm are not GEMM inputs.
//
// JSON (to_json/from_json, stored in quantized checkpoints under "vitc.quant"):
//   {"name": "w4a8", "base": "w4a8" (optional: start from a named configuration),
//    "other_params": "none" | "fp16",
//    "weights": {"qkv": SPEC, ...}, "activations": {"fc2_input": SPEC, ...},
//    "overrides": {"blocks.0.mlp.fc1.weight": SPEC, "blocks.5.fc2_input": SPEC}}
// where SPEC = {"scheme": "symmetric", "bits": 4, "granularity": "tensor"|"channel"|"group",
// "axis": 0, "group_size": 32, "observer": "minmax"|"ema"|"percentile"|"mse", "percentile": 99.99,
// "momentum": 0.1, "max_samples": 32768, "ptf": false, "group_scale_bits": 4}. Within "weights",
// "activations" and "overrides" a SPEC may be partial: missing keys keep the value it replaces (so
// {"bits": 8} raises one layer to 8 bits). Unknown keys or names are a FormatError naming them.

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vitcompress/core/error.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/quant/granularity.hpp"
#include "vitcompress/quant/group_scales.hpp"
#include "vitcompress/quant/observer.hpp"
#include "vitcompress/quant/quantizer.hpp"
#include "vitcompress/quant/scheme.hpp"

namespace vitc::quant {

// How one point is quantized.
struct TensorQuantSpec {
  SchemeSpec scheme;  // kind kNone: the point stays float
  GranularitySpec granularity;
  ObserverSpec observer;
  bool ptf = false;  // Power-of-Two Factor (Asymmetric per-tensor sites over [rows, channels])
  // Per-group weights: 0 keeps float group scales; b in [1, 8] makes every group scale an
  // integer multiple in [1, 2^b − 1] of one step per row (quant/group_scales.hpp), the form the
  // integer engine runs.
  int group_scale_bits = 0;

  [[nodiscard]] bool quantized() const noexcept { return scheme.kind != SchemeKind::kNone; }
  [[nodiscard]] bool needs_calibration() const noexcept {
    return scheme.kind != SchemeKind::kNone && scheme.kind != SchemeKind::kFp16;
  }
  [[nodiscard]] QuantSpec quant_spec() const noexcept { return {scheme, granularity}; }
  void validate(const std::string& what) const {
    quant_spec().validate(what);
    if (ptf && scheme.kind != SchemeKind::kAsymmetric)
      VITC_THROW(ArgumentError(what + ": the power-of-two factor needs the asymmetric scheme"));
    if (ptf && granularity.kind != GranularityKind::kTensor)
      VITC_THROW(ArgumentError(what + ": the power-of-two factor refines a per-tensor scale"));
    if (group_scale_bits != 0) {
      if (group_scale_bits < 1 || group_scale_bits > kMaxGroupScaleBits)
        VITC_THROW(ArgumentError(what + ": group_scale_bits = " + std::to_string(group_scale_bits) +
                                 " must be 0 or in [1, " + std::to_string(kMaxGroupScaleBits) +
                                 "]"));
      if (granularity.kind != GranularityKind::kGroup || scheme.kind != SchemeKind::kSymmetric)
        VITC_THROW(ArgumentError(
            what + ": group_scale_bits needs symmetric weights with per-group granularity"));
    }
  }
  friend bool operator==(const TensorQuantSpec&, const TensorQuantSpec&) = default;
};

enum class WeightKind : int { kPatchEmbed, kQkv, kProj, kFc1, kFc2, kHead };
inline constexpr int kNumWeightKinds = 6;

[[nodiscard]] inline const char* to_string(WeightKind k) noexcept {
  switch (k) {
    case WeightKind::kPatchEmbed:
      return "patch_embed";
    case WeightKind::kQkv:
      return "qkv";
    case WeightKind::kProj:
      return "proj";
    case WeightKind::kFc1:
      return "fc1";
    case WeightKind::kFc2:
      return "fc2";
    case WeightKind::kHead:
      return "head";
  }
  return "unknown";
}

// The timm name of a weight (block ignored for the patch embedding and the head).
[[nodiscard]] inline std::string weight_name(WeightKind k, int block) {
  const std::string p = "blocks." + std::to_string(block) + ".";
  switch (k) {
    case WeightKind::kPatchEmbed:
      return "patch_embed.proj.weight";
    case WeightKind::kQkv:
      return p + "attn.qkv.weight";
    case WeightKind::kProj:
      return p + "attn.proj.weight";
    case WeightKind::kFc1:
      return p + "mlp.fc1.weight";
    case WeightKind::kFc2:
      return p + "mlp.fc2.weight";
    case WeightKind::kHead:
      return "head.weight";
  }
  return "unknown";
}

// Whether a hook site occurs inside the blocks (block >= 0) or outside (block = -1).
[[nodiscard]] constexpr bool site_in_blocks(model::HookSite s) noexcept {
  return s != model::HookSite::kPatchInput && s != model::HookSite::kFinalNormInput &&
         s != model::HookSite::kHeadInput;
}

// Residual stream / LayerNorm inputs: the sites where the power-of-two factor applies.
[[nodiscard]] constexpr bool is_residual_site(model::HookSite s) noexcept {
  return s == model::HookSite::kBlockInput || s == model::HookSite::kMlpResidual ||
         s == model::HookSite::kFinalNormInput;
}

// "blocks.3.fc2_input", or "patch_input" outside the blocks.
[[nodiscard]] inline std::string activation_point_name(model::HookSite s, int block) {
  return block >= 0 ? "blocks." + std::to_string(block) + "." + model::to_string(s)
                    : std::string(model::to_string(s));
}

// The weight kind an override point names ("blocks.N.mlp.fc1.weight", "head.weight"), if any.
[[nodiscard]] inline std::optional<WeightKind> override_weight_kind(const std::string& point) {
  for (int k = 0; k < kNumWeightKinds; ++k) {
    const auto wk = static_cast<WeightKind>(k);
    const bool global = wk == WeightKind::kPatchEmbed || wk == WeightKind::kHead;
    const std::string any_block = weight_name(wk, 0);
    if (global ? point == any_block
               : point.starts_with("blocks.") &&
                     point.ends_with(any_block.substr(std::string("blocks.0").size())))
      return wk;
  }
  return std::nullopt;
}

// The activation site an override point names ("blocks.N.fc2_input", "patch_input"), if any.
[[nodiscard]] inline std::optional<model::HookSite> override_site(const std::string& point) {
  for (int s = 0; s < model::kNumHookSites; ++s) {
    const auto site = static_cast<model::HookSite>(s);
    const std::string sn = model::to_string(site);
    if (site_in_blocks(site) ? point.starts_with("blocks.") && point.ends_with("." + sn)
                             : point == sn)
      return site;
  }
  return std::nullopt;
}

// ArgumentError (naming `what`) for a spec that no weight can take.
inline void validate_weight_spec(const TensorQuantSpec& spec, const std::string& what) {
  spec.validate(what);
  if (spec.ptf) VITC_THROW(ArgumentError(what + ": the power-of-two factor is for activations"));
}

// ArgumentError (naming `what`) for a spec that activation site `site` cannot take.
inline void validate_activation_spec(model::HookSite site, const TensorQuantSpec& spec,
                                     const std::string& what) {
  spec.validate(what);
  if (spec.group_scale_bits != 0)
    VITC_THROW(ArgumentError(what + ": group_scale_bits applies to weights only"));
  if (spec.ptf && !is_residual_site(site))
    VITC_THROW(
        ArgumentError(what + ": the power-of-two factor applies to residual-stream sites only"));
}

struct QuantConfig {
  std::string name = "custom";
  std::array<TensorQuantSpec, kNumWeightKinds> weights{};
  std::array<TensorQuantSpec, model::kNumHookSites> activations{};
  SchemeKind other_params = SchemeKind::kNone;       // kNone (float32) or kFp16
  std::map<std::string, TensorQuantSpec> overrides;  // by point name

  [[nodiscard]] TensorQuantSpec weight(WeightKind k, int block) const {
    if (auto it = overrides.find(weight_name(k, block)); it != overrides.end()) return it->second;
    return weights[static_cast<std::size_t>(k)];
  }
  [[nodiscard]] TensorQuantSpec activation(model::HookSite s, int block) const {
    if (auto it = overrides.find(activation_point_name(s, block)); it != overrides.end())
      return it->second;
    return activations[static_cast<std::size_t>(s)];
  }

  // ArgumentError naming the first invalid spec (an override is checked as the weight or
  // activation point it names).
  void validate() const {
    for (int k = 0; k < kNumWeightKinds; ++k)
      validate_weight_spec(weights[static_cast<std::size_t>(k)],
                           std::string("weights.") + to_string(static_cast<WeightKind>(k)));
    for (int s = 0; s < model::kNumHookSites; ++s) {
      const auto site = static_cast<model::HookSite>(s);
      validate_activation_spec(site, activations[static_cast<std::size_t>(s)],
                               std::string("activations.") + model::to_string(site));
    }
    for (const auto& [point, spec] : overrides) {
      const std::string what = "overrides." + point;
      if (override_weight_kind(point))
        validate_weight_spec(spec, what);
      else if (const auto site = override_site(point))
        validate_activation_spec(*site, spec, what);
      else
        spec.validate(what);  // a name no point has: from_json and FakeQuantViT refuse it
    }
    if (other_params != SchemeKind::kNone && other_params != SchemeKind::kFp16)
      VITC_THROW(ArgumentError("other_params: only 'none' or 'fp16'"));
  }

  [[nodiscard]] static std::vector<std::string> names() {
    return {"fp16", "w8a8", "w7a8", "w8a8-log2attn", "w4a8", "w4a8-g32", "w4a8-log2attn", "w4a4"};
  }
  // A named configuration (see the table above); ArgumentError listing the names otherwise.
  [[nodiscard]] static QuantConfig named(const std::string& name);

  [[nodiscard]] std::string to_json() const;
  // Parses to_json()'s form (and partial SPECs, "base"); FormatError naming the key at fault,
  // ArgumentError for invalid values (via validate()).
  [[nodiscard]] static QuantConfig from_json(const std::string& text);
};

// ---------------------------------------------------------------------------------------------

namespace detail {

inline TensorQuantSpec make_spec(SchemeKind kind, int bits, GranularitySpec g = {},
                                 ObserverKind obs = ObserverKind::kMinMax, bool ptf = false) {
  TensorQuantSpec s;
  s.scheme = {kind, bits};
  s.granularity = g;
  s.observer.kind = obs;
  s.ptf = ptf;
  return s;
}

// Every field the spec uses. group_scale_bits = 0 is left out unless `explicit_zero_bits`: an
// override is read on top of its kind's spec, whose nonzero group_scale_bits it would inherit.
inline nlohmann::json spec_to_json(const TensorQuantSpec& s, bool explicit_zero_bits = false) {
  nlohmann::json j;
  j["scheme"] = to_string(s.scheme.kind);
  j["bits"] = s.scheme.bits;
  j["granularity"] = to_string(s.granularity.kind);
  if (s.granularity.kind == GranularityKind::kChannel) j["axis"] = s.granularity.axis;
  if (s.granularity.kind == GranularityKind::kGroup) j["group_size"] = s.granularity.group_size;
  j["observer"] = to_string(s.observer.kind);
  if (s.observer.kind == ObserverKind::kPercentile) j["percentile"] = s.observer.percentile;
  if (s.observer.kind == ObserverKind::kMovingAverage) j["momentum"] = s.observer.momentum;
  if (s.observer.kind == ObserverKind::kMse) j["max_samples"] = s.observer.max_samples;
  j["ptf"] = s.ptf;
  if (s.group_scale_bits != 0 || explicit_zero_bits) j["group_scale_bits"] = s.group_scale_bits;
  return j;
}

// Applies the keys of `j` on top of `s`.
// An integer JSON value that T represents; FormatError naming `at` otherwise (a larger value must
// not wrap into a valid one: bits = 2^32 + 4 is not 4).
template <class T>
[[nodiscard]] T json_integer(const nlohmann::json& v, const std::string& at) {
  if (!v.is_number_integer()) VITC_THROW(FormatError(at + " must be an integer"));
  const bool fits =
      v.is_number_unsigned()
          ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())
          : v.get<std::int64_t>() >= std::numeric_limits<T>::min() &&
                v.get<std::int64_t>() <= std::numeric_limits<T>::max();
  if (!fits) VITC_THROW(FormatError(at + " = " + v.dump() + " is out of range"));
  return static_cast<T>(v.get<std::int64_t>());
}

inline TensorQuantSpec spec_from_json(const nlohmann::json& j, TensorQuantSpec s,
                                      const std::string& where) {
  if (!j.is_object()) VITC_THROW(FormatError("vitc.quant: " + where + " must be an object"));
  for (const auto& [key, v] : j.items()) {
    const std::string at = "vitc.quant: " + where + "." + key;
    const auto need = [&](bool ok, const char* type) {
      if (!ok) VITC_THROW(FormatError(at + " must be " + type));
    };
    if (key == "scheme") {
      need(v.is_string(), "a string");
      s.scheme.kind = scheme_kind_from_string(v.get<std::string>(), at);
    } else if (key == "bits") {
      s.scheme.bits = json_integer<int>(v, at);
    } else if (key == "granularity") {
      need(v.is_string(), "a string");
      const auto g = v.get<std::string>();
      if (g == "tensor")
        s.granularity.kind = GranularityKind::kTensor;
      else if (g == "channel")
        s.granularity.kind = GranularityKind::kChannel;
      else if (g == "group")
        s.granularity.kind = GranularityKind::kGroup;
      else
        VITC_THROW(FormatError(at + ": unknown granularity '" + g + "' (tensor, channel, group)"));
    } else if (key == "axis") {
      s.granularity.axis = json_integer<int>(v, at);
    } else if (key == "group_size") {
      s.granularity.group_size = json_integer<Index>(v, at);
    } else if (key == "observer") {
      need(v.is_string(), "a string");
      s.observer.kind = observer_kind_from_string(v.get<std::string>(), at);
    } else if (key == "percentile") {
      need(v.is_number(), "a number");
      s.observer.percentile = v.get<double>();
    } else if (key == "momentum") {
      need(v.is_number(), "a number");
      s.observer.momentum = v.get<double>();
    } else if (key == "max_samples") {
      s.observer.max_samples = json_integer<Index>(v, at);
    } else if (key == "ptf") {
      need(v.is_boolean(), "a boolean");
      s.ptf = v.get<bool>();
    } else if (key == "group_scale_bits") {
      s.group_scale_bits = json_integer<int>(v, at);
    } else {
      VITC_THROW(FormatError(at + ": unknown key"));
    }
  }
  // Fields that the granularity and observer kinds do not use go back to their defaults, so that
  // specs which behave the same compare equal and to_json (which writes only the fields in use)
  // reads back equal: switching "granularity" from "group" to "channel" leaves no group size.
  const GranularitySpec g0;
  const ObserverSpec o0;
  if (s.granularity.kind != GranularityKind::kChannel) s.granularity.axis = g0.axis;
  if (s.granularity.kind != GranularityKind::kGroup) s.granularity.group_size = g0.group_size;
  if (s.observer.kind != ObserverKind::kMovingAverage) s.observer.momentum = o0.momentum;
  if (s.observer.kind != ObserverKind::kPercentile) s.observer.percentile = o0.percentile;
  if (s.observer.kind != ObserverKind::kMse) s.observer.max_samples = o0.max_samples;
  return s;
}

}  // namespace detail

inline QuantConfig QuantConfig::named(const std::string& name) {
  using detail::make_spec;
  using model::HookSite;
  using K = SchemeKind;
  constexpr GranularitySpec kPerTensor{};
  constexpr GranularitySpec kPerOutChannel{GranularityKind::kChannel, 0, 0};
  QuantConfig c;
  c.name = name;
  const auto act = [&](HookSite s) -> TensorQuantSpec& {
    return c.activations[static_cast<std::size_t>(s)];
  };
  const auto wt = [&](WeightKind k) -> TensorQuantSpec& {
    return c.weights[static_cast<std::size_t>(k)];
  };
  if (name == "fp16") {
// GCC 12 misreports these fills as writing past the array (a -Wstringop-overflow false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
    c.weights.fill(make_spec(K::kFp16, 16));
    c.activations.fill(make_spec(K::kFp16, 16));
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
    c.other_params = K::kFp16;
    return c;
  }
  int wbits = 0, abits = 0;
  SchemeKind attention = K::kAsymmetric;
  int attention_bits = 8;
  if (name == "w8a8") {
    wbits = 8, abits = 8;
  } else if (name == "w7a8") {
    wbits = 7, abits = 8;
  } else if (name == "w8a8-log2attn") {
    wbits = 8, abits = 8, attention = K::kLog2, attention_bits = 4;
  } else if (name == "w4a8" || name == "w4a8-g32") {
    wbits = 4, abits = 8;
  } else if (name == "w4a8-log2attn") {
    wbits = 4, abits = 8, attention = K::kLog2, attention_bits = 4;
  } else if (name == "w4a4") {
    wbits = 4, abits = 4, attention = K::kLogSqrt2, attention_bits = 4;
  } else {
    std::string list;
    for (const auto& n : names()) list += (list.empty() ? "" : ", ") + n;
    VITC_THROW(ArgumentError("quantization config '" + name + "' is not one of: " + list));
  }
  const ObserverKind wobs = wbits < 8 ? ObserverKind::kMse : ObserverKind::kMinMax;
  const ObserverKind aobs = abits < 8 ? ObserverKind::kMse : ObserverKind::kMinMax;
  for (WeightKind k : {WeightKind::kQkv, WeightKind::kProj, WeightKind::kFc1, WeightKind::kFc2}) {
    wt(k) = make_spec(K::kSymmetric, wbits, kPerOutChannel, wobs);
    if (name == "w4a8-g32") {  // groups of 32 along K, scales 4-bit multiples of a row step
      wt(k).granularity = {GranularityKind::kGroup, 0, 32};
      wt(k).group_scale_bits = 4;
    }
  }
  const int edge_bits = wbits == 7 ? 7 : 8;  // patch embedding and head
  const ObserverKind edge_obs = edge_bits < 8 ? ObserverKind::kMse : ObserverKind::kMinMax;
  wt(WeightKind::kPatchEmbed) = make_spec(K::kSymmetric, edge_bits, kPerOutChannel, edge_obs);
  wt(WeightKind::kHead) = make_spec(K::kSymmetric, edge_bits, kPerOutChannel, edge_obs);
  act(HookSite::kPatchInput) = make_spec(K::kAsymmetric, 8, kPerTensor);
  act(HookSite::kHeadInput) = make_spec(K::kAsymmetric, 8, kPerTensor);
  for (HookSite s : {HookSite::kQkvInput, HookSite::kFc1Input, HookSite::kProjInput,
                     HookSite::kFc2Input, HookSite::kQuery})
    act(s) = make_spec(K::kAsymmetric, abits, kPerTensor, aobs);
  // w7a8: keys and values, the B operands of Q·Kᵀ and P·V, at 7 bits as the weights.
  const int kv_bits = wbits == 7 ? 7 : abits;
  for (HookSite s : {HookSite::kKey, HookSite::kValue})
    act(s) = make_spec(K::kSymmetric, kv_bits, kPerTensor,
                       kv_bits < 8 ? ObserverKind::kMse : ObserverKind::kMinMax);
  act(HookSite::kAttentionProbs) =
      make_spec(attention, attention_bits, kPerTensor,
                attention == K::kAsymmetric ? aobs : ObserverKind::kMinMax);
  for (HookSite s : {HookSite::kBlockInput, HookSite::kMlpResidual, HookSite::kFinalNormInput})
    act(s) = make_spec(K::kAsymmetric, 8, kPerTensor, ObserverKind::kMinMax, /*ptf=*/true);
  return c;
}

inline std::string QuantConfig::to_json() const {
  nlohmann::json j;
  j["format"] = "vitc.quant";
  j["version"] = 1;
  j["name"] = name;
  j["other_params"] = to_string(other_params);
  nlohmann::json w, a, o = nlohmann::json::object();
  for (int k = 0; k < kNumWeightKinds; ++k)
    w[to_string(static_cast<WeightKind>(k))] =
        detail::spec_to_json(weights[static_cast<std::size_t>(k)]);
  for (int s = 0; s < model::kNumHookSites; ++s)
    a[model::to_string(static_cast<model::HookSite>(s))] =
        detail::spec_to_json(activations[static_cast<std::size_t>(s)]);
  for (const auto& [point, spec] : overrides) o[point] = detail::spec_to_json(spec, true);
  j["weights"] = std::move(w);
  j["activations"] = std::move(a);
  j["overrides"] = std::move(o);
  return j.dump();
}

inline QuantConfig QuantConfig::from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) VITC_THROW(FormatError("vitc.quant: not valid JSON"));
  if (!j.is_object()) VITC_THROW(FormatError("vitc.quant: expected a JSON object"));
  QuantConfig c;
  if (auto b = j.find("base"); b != j.end()) {
    if (!b->is_string()) VITC_THROW(FormatError("vitc.quant: base must be a string"));
    c = named(b->get<std::string>());
    c.name = "custom";
  }
  // Keys apply in a fixed order (nlohmann::json iterates objects alphabetically, which would put
  // "overrides" before "weights"): a partial override starts from the kind default as the
  // "weights" / "activations" keys of the same document set it.
  const std::vector<std::string> known = {"base",         "format",  "version",     "name",
                                          "other_params", "weights", "activations", "overrides"};
  for (const auto& [key, v] : j.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      VITC_THROW(FormatError("vitc.quant: unknown key '" + key + "'"));
  for (const std::string& key : known) {
    const auto it = j.find(key);
    if (it == j.end() || key == "base") continue;
    const nlohmann::json& v = *it;
    if (key == "format") {
      if (!v.is_string() || v.get<std::string>() != "vitc.quant")
        VITC_THROW(FormatError("vitc.quant: format must be \"vitc.quant\""));
    } else if (key == "version") {
      if (!v.is_number_integer() || !(v == 1))
        VITC_THROW(FormatError("vitc.quant: unsupported version (this library reads version 1)"));
    } else if (key == "name") {
      if (!v.is_string()) VITC_THROW(FormatError("vitc.quant: name must be a string"));
      c.name = v.get<std::string>();
    } else if (key == "other_params") {
      if (!v.is_string()) VITC_THROW(FormatError("vitc.quant: other_params must be a string"));
      c.other_params = scheme_kind_from_string(v.get<std::string>(), "vitc.quant: other_params");
    } else if (key == "weights") {
      if (!v.is_object()) VITC_THROW(FormatError("vitc.quant: weights must be an object"));
      for (const auto& [wk, spec] : v.items()) {
        int found = -1;
        for (int k = 0; k < kNumWeightKinds; ++k)
          if (wk == to_string(static_cast<WeightKind>(k))) found = k;
        if (found < 0)
          VITC_THROW(FormatError("vitc.quant: weights." + wk +
                                 ": unknown weight kind (patch_embed, qkv, proj, fc1, fc2, head)"));
        auto& dst = c.weights[static_cast<std::size_t>(found)];
        dst = detail::spec_from_json(spec, dst, "weights." + wk);
      }
    } else if (key == "activations") {
      if (!v.is_object()) VITC_THROW(FormatError("vitc.quant: activations must be an object"));
      for (const auto& [site, spec] : v.items()) {
        int found = -1;
        for (int s = 0; s < model::kNumHookSites; ++s)
          if (site == model::to_string(static_cast<model::HookSite>(s))) found = s;
        if (found < 0)
          VITC_THROW(FormatError("vitc.quant: activations." + site + ": unknown hook site"));
        auto& dst = c.activations[static_cast<std::size_t>(found)];
        dst = detail::spec_from_json(spec, dst, "activations." + site);
      }
    } else if (key == "overrides") {
      if (!v.is_object()) VITC_THROW(FormatError("vitc.quant: overrides must be an object"));
      for (const auto& [point, spec] : v.items()) {
        // The spec it replaces: the kind default the point would otherwise get.
        TensorQuantSpec base;
        bool known = true;
        if (const auto wk = override_weight_kind(point))
          base = c.weights[static_cast<std::size_t>(*wk)];
        else if (const auto site = override_site(point))
          base = c.activations[static_cast<std::size_t>(*site)];
        else
          known = false;
        if (!known)
          VITC_THROW(FormatError("vitc.quant: overrides." + point +
                                 ": not the name of a weight or activation point"));
        if (auto prev = c.overrides.find(point); prev != c.overrides.end()) base = prev->second;
        c.overrides[point] = detail::spec_from_json(spec, base, "overrides." + point);
      }
    }
  }
  c.validate();
  return c;
}

}  // namespace vitc::quant
