// SPDX-License-Identifier: Apache-2.0
#pragma once
// Quantized checkpoints: a FakeQuantViT saved as safetensors with its integer weights and every
// scale, and loaded back into the same simulated model.
//
// FILE FORMAT ("vitc.quant" version 1). Tensor names, for a model with timm parameter NAMEs:
//
//   NAME.qweight       the integer codes of a quantized weight, as the 2-D view [rows, cols]
//                      ([out, in]; the patch embedding [D, C·P·P]):
//                        Symmetric, bits <= 4   U8 [rows, ceil(cols/2)], packed signed 4-bit in
//                                               the layout of kernels/int4_packing.hpp (low
//                                               nibble first along K, two's complement)
//                        Symmetric, 5..8 bits   I8 [rows, cols]
//                        Asymmetric             U8 [rows, cols]
//                        Log2 / LogSqrt2        I8 (I16 for 8 bits) [rows, cols], −1 = zero
//   NAME.scale         F32, one per group: [1] per tensor, [rows] per output channel, [cols] per
//                      input channel, [rows, ceil(cols/G)] per group of G along K
//   NAME.zero_point    I32, same shape as NAME.scale, only for Asymmetric weights
//   NAME               a parameter that is not integer-quantized (biases, LayerNorm, class token,
//                      position embedding, and weights of scheme none/fp16): F32, or F16 when the
//                      configuration makes it fp16 (other_params = fp16, or an fp16 weight)
//   quant.POINT.scale        F32 [groups] for each calibrated activation point POINT
//   quant.POINT.zero_point   I32 [groups]                  (POINT = "blocks.3.fc2_input", ...)
//   quant.POINT.ptf_alpha    U8 [channels], power-of-two factor points only; their scale and
//                            zero point are then the base s and z ([1] each), and channel c uses
//                            s·2^alpha[c] (quant/power_of_two_factor.hpp)
//
// Dequantization is value = scale[g]·(code − zero_point[g]) (log: scale[g]·2^(−code), √2 levels
// for LogSqrt2), g the code's group (quant/granularity.hpp).
//
// __metadata__ (all values are strings):
//   "format"             "pt"
//   "vitc.config"        the ViTConfig JSON (model/vit_config.hpp)
//   "vitc.quant"         the QuantConfig JSON (quant/quant_config.hpp): every point's scheme,
//                        bits, granularity and observer
//   "vitc.quant.weights" JSON {NAME: {"shape": [rows, cols], "storage": "int4" | "int8" | "uint8"
//                        | "int16" | "f16" | "f32"}} for every weight point
//   plus whatever the caller adds (vitc quantize adds "vitc.quant.calibration": how the file was
//   made: images, QAT epochs, seconds).
//
// Loading validates everything: required tensors present (FormatError), shapes (ShapeError),
// dtypes (FormatError), scales finite and positive (and integer multiples of a row step where the
// config sets group_scale_bits), codes in range (ArgumentError), every tensor
// used (an unknown tensor is a FormatError), each message naming the tensor. The loaded model's
// simulated weights are bit-identical to those of the model that was saved (dequantize(quantize
// (w)) is idempotent), so it computes the same logits.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/kernels/int4_packing.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/quant_config.hpp"
#include "vitcompress/quant/quantizer.hpp"

namespace vitc::quant {

inline constexpr const char* kQuantMetadataKey = "vitc.quant";
inline constexpr const char* kQuantWeightsMetadataKey = "vitc.quant.weights";

// Whether a checkpoint is a quantized one (has "vitc.quant" metadata).
[[nodiscard]] inline bool is_quantized_checkpoint(const io::SafetensorsReader& reader) {
  return reader.metadata().contains(kQuantMetadataKey);
}

// The storage of a weight point's codes (see the format above).
[[nodiscard]] inline const char* weight_storage(const TensorQuantSpec& spec) noexcept {
  switch (spec.scheme.kind) {
    case SchemeKind::kSymmetric:
      return spec.scheme.bits <= 4 ? "int4" : "int8";
    case SchemeKind::kAsymmetric:
      return "uint8";
    case SchemeKind::kLog2:
    case SchemeKind::kLogSqrt2:
      return spec.scheme.bits <= 7 ? "int8" : "int16";
    case SchemeKind::kFp16:
      return "f16";
    case SchemeKind::kNone:
      break;
  }
  return "f32";
}

namespace detail {

inline std::vector<Index> scale_shape(const TensorQuantParams& p, Index rows, Index cols) {
  switch (p.granularity.kind) {
    case GranularityKind::kTensor:
      return {1};
    case GranularityKind::kChannel:
      return {p.granularity.axis == 0 ? rows : cols};
    case GranularityKind::kGroup:
      return {rows, (cols + p.granularity.group_size - 1) / p.granularity.group_size};
  }
  return {1};
}

template <class T>
std::span<const std::byte> as_bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

inline void add_params(io::SafetensorsWriter& w, const std::string& prefix,
                       const TensorQuantParams& p, std::vector<Index> shape, bool zero_points) {
  w.add_raw(prefix + ".scale", io::DType::kF32, shape, as_bytes_of(p.scales));
  if (zero_points)
    w.add_raw(prefix + ".zero_point", io::DType::kI32, shape, as_bytes_of(p.zero_points));
}

template <class Q>
void add_codes(io::SafetensorsWriter& w, const std::string& name,
               const TensorView<const float, 2>& v, const TensorQuantParams& p) {
  const auto codes = quantize<Q>(v, p, name);
  w.add(name, codes);
}

}  // namespace detail

// A writer holding the quantized model (see the format above) plus `extra_metadata`.
[[nodiscard]] inline io::SafetensorsWriter quantized_writer(
    FakeQuantViT& model, const std::map<std::string, std::string>& extra_metadata = {}) {
  if (!model.weights_ready())
    VITC_THROW(ArgumentError("save quantized: weights are not quantized (run quantize_weights())"));
  // Bring learned scales up to date with the last optimizer step (QAT updates them lazily).
  (void)model.simulated_weights();
  for (const ActivationPoint& p : model.hooks().points())
    if (!p.ready)
      VITC_THROW(ArgumentError("save quantized: activation point " + p.name +
                               " is not calibrated (run calibrate())"));
  const model::ViTWeights<float>& master = model.master_weights();
  master.check_shapes();
  const QuantConfig& config = model.config();
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& [key, value] : extra_metadata) w.set_metadata(key, value);
  w.set_metadata(model::kConfigMetadataKey, master.config.to_json());
  w.set_metadata(kQuantMetadataKey, config.to_json());

  std::map<std::string, const WeightPoint*> points;
  nlohmann::json weights_meta = nlohmann::json::object();
  for (const WeightPoint& wp : model.weight_points()) {
    points[wp.name] = &wp;
    weights_meta[wp.name] = {{"shape", {wp.rows, wp.cols}}, {"storage", weight_storage(wp.spec)}};
  }
  w.set_metadata(kQuantWeightsMetadataKey, weights_meta.dump());

  for (const auto& ref : master.parameters()) {
    const auto it = points.find(ref.name);
    const WeightPoint* wp = it == points.end() ? nullptr : it->second;
    const bool integer = wp != nullptr && wp->spec.needs_calibration();
    if (!integer) {
      const bool f16 = (wp != nullptr && wp->spec.scheme.kind == SchemeKind::kFp16) ||
                       (wp == nullptr && config.other_params == SchemeKind::kFp16);
      if (f16) {
        std::vector<std::byte> bytes(ref.values.size() * 2);
        for (std::size_t i = 0; i < ref.values.size(); ++i) {
          const std::uint16_t h = float_to_half_bits(ref.values[i]);
          std::memcpy(bytes.data() + 2 * i, &h, 2);
        }
        w.add_raw(ref.name, io::DType::kF16, ref.shape, bytes);
      } else {
        w.add_raw(ref.name, io::DType::kF32, ref.shape, std::as_bytes(ref.values));
      }
      continue;
    }
    const TensorView<const float, 2> v(ref.values.data(), {wp->rows, wp->cols});
    const std::string q = ref.name + ".qweight";
    const std::string storage = weight_storage(wp->spec);
    if (storage == "int4") {
      const auto codes = quantize<std::int8_t>(v, wp->params, ref.name);
      w.add(q, kernels::pack_int4(codes.cview(), ref.name));
    } else if (storage == "int8") {
      detail::add_codes<std::int8_t>(w, q, v, wp->params);
    } else if (storage == "uint8") {
      detail::add_codes<std::uint8_t>(w, q, v, wp->params);
    } else {
      detail::add_codes<std::int16_t>(w, q, v, wp->params);
    }
    detail::add_params(w, ref.name, wp->params, detail::scale_shape(wp->params, wp->rows, wp->cols),
                       wp->spec.scheme.kind == SchemeKind::kAsymmetric);
  }

  for (const ActivationPoint& p : model.hooks().points()) {
    if (!p.spec.needs_calibration()) continue;
    const std::string prefix = "quant." + p.name;
    if (p.ptf) {
      const std::vector<float> s{p.ptf->base_scale};
      const std::vector<std::int32_t> z{p.ptf->zero_point};
      w.add_raw(prefix + ".scale", io::DType::kF32, {1}, detail::as_bytes_of(s));
      w.add_raw(prefix + ".zero_point", io::DType::kI32, {1}, detail::as_bytes_of(z));
      w.add_raw(prefix + ".ptf_alpha", io::DType::kU8, {static_cast<Index>(p.ptf->alpha.size())},
                detail::as_bytes_of(p.ptf->alpha));
    } else {
      detail::add_params(w, prefix, p.params, {p.params.num_groups()}, true);
    }
  }
  return w;
}

inline void save_quantized(const std::filesystem::path& path, FakeQuantViT& model,
                           const std::map<std::string, std::string>& extra_metadata = {}) {
  quantized_writer(model, extra_metadata).write(path);
}

namespace detail {

inline const io::TensorInfo& need_tensor(const io::SafetensorsReader& r, const std::string& name,
                                         std::set<std::string>& used) {
  if (!r.contains(name)) VITC_THROW(FormatError(r.source() + ": missing tensor '" + name + "'"));
  used.insert(name);
  return r.info(name);
}

inline void expect_tensor_shape(const io::SafetensorsReader& r, const io::TensorInfo& t,
                                const std::vector<Index>& want) {
  if (t.shape != want) {
    std::string g = "[", e = "[";
    for (std::size_t i = 0; i < t.shape.size(); ++i)
      g += (i ? ", " : "") + std::to_string(t.shape[i]);
    for (std::size_t i = 0; i < want.size(); ++i) e += (i ? ", " : "") + std::to_string(want[i]);
    VITC_THROW(ShapeError(r.source() + ": tensor '" + t.name + "' has shape " + g + "], expected " +
                          e + "]"));
  }
}

// Reads a tensor of any rank as a flat vector of T, after checking its shape.
template <class T>
std::vector<T> read_values(const io::SafetensorsReader& r, const std::string& name,
                           const std::vector<Index>& shape, std::set<std::string>& used) {
  const io::TensorInfo& t = need_tensor(r, name, used);
  expect_tensor_shape(r, t, shape);
  std::vector<T> out(static_cast<std::size_t>(t.element_count()));
  const auto read_rank = [&]<std::size_t R>() {
    const auto tensor = r.read<T, R>(name);
    std::copy(tensor.span().begin(), tensor.span().end(), out.begin());
  };
  switch (shape.size()) {
    case 1:
      read_rank.template operator()<1>();
      break;
    case 2:
      read_rank.template operator()<2>();
      break;
    case 3:
      read_rank.template operator()<3>();
      break;
    case 4:
      read_rank.template operator()<4>();
      break;
    default:
      VITC_THROW(FormatError(r.source() + ": tensor '" + name + "' has an unexpected rank"));
  }
  return out;
}

inline TensorQuantParams read_params(const io::SafetensorsReader& r, const std::string& prefix,
                                     const TensorQuantSpec& spec, const std::vector<Index>& shape,
                                     std::set<std::string>& used) {
  TensorQuantParams p{spec.scheme, spec.granularity, {}, {}};
  p.scales = read_values<float>(r, prefix + ".scale", shape, used);
  if (r.contains(prefix + ".zero_point"))
    p.zero_points = read_values<std::int32_t>(r, prefix + ".zero_point", shape, used);
  else if (spec.scheme.kind == SchemeKind::kAsymmetric)
    VITC_THROW(FormatError(r.source() + ": missing tensor '" + prefix + ".zero_point'"));
  else
    p.zero_points.assign(p.scales.size(), 0);
  return p;
}

}  // namespace detail

// Loads a checkpoint written by save_quantized() into a FakeQuantViT ready to predict (and to be
// fine-tuned further). Errors as described in the header comment.
[[nodiscard]] inline FakeQuantViT load_quantized(const io::SafetensorsReader& r,
                                                 ThreadPool* pool = nullptr) {
  const auto& meta = r.metadata();
  const std::string& src = r.source();
  const auto cfg_it = meta.find(model::kConfigMetadataKey);
  if (cfg_it == meta.end())
    VITC_THROW(FormatError(src + ": missing __metadata__ key '" +
                           std::string(model::kConfigMetadataKey) + "'"));
  const auto q_it = meta.find(kQuantMetadataKey);
  if (q_it == meta.end())
    VITC_THROW(FormatError(src + ": missing __metadata__ key 'vitc.quant' (not a quantized "
                                 "checkpoint)"));
  const model::ViTConfig vit_config = model::ViTConfig::from_json(cfg_it->second);
  const QuantConfig qconfig = QuantConfig::from_json(q_it->second);

  // Build the model on zero weights to learn its points, then fill its weights in place (its
  // simulated copy is refreshed from them on first use): one model's memory, no second copy.
  FakeQuantViT model(model::ViTWeights<float>(vit_config), qconfig, pool);
  std::map<std::string, WeightPoint*> points;
  for (WeightPoint& wp : model.weight_points()) points[wp.name] = &wp;

  std::set<std::string> used;
  for (auto& ref : model.master_weights().parameters()) {
    const auto it = points.find(ref.name);
    WeightPoint* wp = it == points.end() ? nullptr : it->second;
    if (wp == nullptr || !wp->spec.needs_calibration()) {
      const auto values = detail::read_values<float>(r, ref.name, ref.shape, used);
      std::copy(values.begin(), values.end(), ref.values.begin());
      continue;
    }
    const std::string storage = weight_storage(wp->spec);
    const std::string q = ref.name + ".qweight";
    TensorQuantParams p = detail::read_params(
        r, ref.name, wp->spec,
        detail::scale_shape(TensorQuantParams{wp->spec.scheme, wp->spec.granularity, {}, {}},
                            wp->rows, wp->cols),
        used);
    p.validate(wp->rows, wp->cols, ref.name);
    if (wp->spec.group_scale_bits > 0)  // integer multiples of a row step, as the config says
      (void)split_group_scales(p, wp->rows, wp->spec.group_scale_bits, ref.name);
    const TensorView<float, 2> out(ref.values.data(), {wp->rows, wp->cols});
    if (storage == "int4") {
      const auto packed = detail::read_values<std::uint8_t>(
          r, q, {wp->rows, kernels::int4_row_bytes(wp->cols)}, used);
      const TensorView<const std::uint8_t, 2> pv(packed.data(),
                                                 {wp->rows, kernels::int4_row_bytes(wp->cols)});
      const auto codes = kernels::unpack_int4(pv, wp->cols, q);
      for (std::int8_t c : codes.span())
        if (c < wp->spec.scheme.qmin() || c > wp->spec.scheme.qmax())
          VITC_THROW(ArgumentError(src + ": tensor '" + q + "' holds a code outside the " +
                                   std::to_string(wp->spec.scheme.bits) + "-bit range"));
      dequantize<std::int8_t>(codes.cview(), p, out, q);
    } else {
      const auto check_and_dequantize = [&](const auto& codes) {
        using C = typename std::remove_cvref_t<decltype(codes)>::value_type;
        const std::int32_t lo = wp->spec.scheme.is_log() ? kLogZeroCode : wp->spec.scheme.qmin();
        for (C c : codes)
          if (c < lo || c > wp->spec.scheme.qmax())
            VITC_THROW(ArgumentError(src + ": tensor '" + q + "' holds a code outside the " +
                                     std::to_string(wp->spec.scheme.bits) + "-bit range"));
        dequantize<C>(TensorView<const C, 2>(codes.data(), {wp->rows, wp->cols}), p, out, q);
      };
      if (storage == "int8")
        check_and_dequantize(detail::read_values<std::int8_t>(r, q, {wp->rows, wp->cols}, used));
      else if (storage == "uint8")
        check_and_dequantize(detail::read_values<std::uint8_t>(r, q, {wp->rows, wp->cols}, used));
      else
        check_and_dequantize(detail::read_values<std::int16_t>(r, q, {wp->rows, wp->cols}, used));
    }
    wp->params = std::move(p);
    wp->ready = true;
  }
  model.master_weights().check_finite();

  for (ActivationPoint& p : model.hooks().points()) {
    if (!p.spec.needs_calibration()) continue;
    const std::string prefix = "quant." + p.name;
    if (p.spec.ptf) {
      PtfParams ptf;
      ptf.bits = p.spec.scheme.bits;
      const auto s = detail::read_values<float>(r, prefix + ".scale", {1}, used);
      const auto z = detail::read_values<std::int32_t>(r, prefix + ".zero_point", {1}, used);
      const Index channels = vit_config.embed_dim;
      ptf.alpha = detail::read_values<std::uint8_t>(r, prefix + ".ptf_alpha", {channels}, used);
      ptf.base_scale = s[0];
      ptf.zero_point = z[0];
      for (std::uint8_t a : ptf.alpha)
        if (a > kPtfMaxAlpha)
          VITC_THROW(ArgumentError(src + ": tensor '" + prefix + ".ptf_alpha' holds a factor > 3"));
      p.params = ptf.as_tensor_params();
      p.params.validate(1, channels, prefix);
      p.ptf = std::move(ptf);
    } else {
      if (!r.contains(prefix + ".scale"))
        VITC_THROW(FormatError(src + ": missing tensor '" + prefix + ".scale'"));
      const Index groups = r.info(prefix + ".scale").element_count();
      p.params = detail::read_params(r, prefix, p.spec, {groups}, used);
      // The group count is checked against each activation's shape when it is quantized; check
      // the values now.
      for (float s : p.params.scales)
        if (!(s > 0.0f) || !std::isfinite(s))
          VITC_THROW(ArgumentError(src + ": tensor '" + prefix +
                                   ".scale' holds a scale that is "
                                   "not finite and positive"));
    }
    p.ready = true;
  }
  for (const io::TensorInfo& t : r.tensors())
    if (!used.contains(t.name))
      VITC_THROW(FormatError(src + ": unknown tensor '" + t.name +
                             "' (not part of a quantized checkpoint with this configuration)"));
  return model;
}

[[nodiscard]] inline FakeQuantViT load_quantized(const std::filesystem::path& path,
                                                 ThreadPool* pool = nullptr) {
  return load_quantized(io::SafetensorsReader::open(path), pool);
}

}  // namespace vitc::quant
