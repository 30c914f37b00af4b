// SPDX-License-Identifier: Apache-2.0
#pragma once
// Compressed checkpoints: the one file `vitc compress` writes and `vitc eval` / `vitc run` /
// `vitc bench` load into the integer engine. A compressed checkpoint IS a quantized checkpoint
// (quant/quantized_checkpoint.hpp, "vitc.quant" version 1: int8 or packed int4 weight codes in the
// kernels' layout, weight scales and zero points, every activation point's scale, zero point and
// power-of-two factors, the float parameters; "vitc.config" holds the (pruned) ViTConfig) plus one
// more metadata entry, "vitc.compressed": how the model was made and what it measured.
//
// "vitc.compressed" (a JSON string, format_version 1):
//   {"format_version": 1,
//    "recipe": {"prune_ratio": 0.09375,           number in [0, 1)
//               "importance": "taylor",           none | magnitude | l2 | l1 | taylor |
//                                                 hessian-fisher | hessian-hutchinson
//               "groups": ["heads", "mlp"],       each heads | mlp | embed | qk | v | blocks
//               "round": 1,                       integer >= 1 (kept channels a multiple of it)
//               "finetune_epochs": 1,             integer >= 0
//               "qat_epochs": 0,                  integer >= 0
//               "calibration_images": 256,        integer >= 1
//               "quant_config": "w8a8"},          must equal the name in "vitc.quant"
//    "source": {"parameters": 456394,            integers >= the compressed model's own
//               "macs_per_image": 7926496,
//               "file": "models/x.safetensors"},  optional
//    "accuracy": {"top1": 0.9071,                 optional; fraction in [0, 1]
//                 "test_images": 10000,           integer >= 1
//                 "measured_by": "engine"}}       engine | fake-quant simulation
// Unknown keys are a FormatError (a newer format must bump format_version).
//
// Fixed-point multipliers are not stored: the engine derives each one (kernels/fixed_point.hpp)
// from the stored float scales when it is built, deterministically, so a stored copy could only
// disagree with the scales it came from, and the engine has no public API to take them.
//
// Loading validates everything the quantized loader validates (tensors, shapes, dtypes, code
// ranges, scales) and every field above; each error is a FormatError naming the field.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace vitc::engine {

inline constexpr const char* kCompressedMetadataKey = "vitc.compressed";
inline constexpr int kCompressedFormatVersion = 1;

// What "vitc.compressed" records (see the format above).
struct CompressionInfo {
  double prune_ratio = 0;
  std::string importance = "none";
  std::vector<std::string> groups;
  Index round_to = 1;
  int finetune_epochs = 0;
  int qat_epochs = 0;
  Index calibration_images = 1;
  std::string quant_config;
  Index source_parameters = 0;
  Index source_macs = 0;
  std::string source_file;  // empty: not recorded
  // Measured top-1, if known.
  std::optional<double> top1;
  Index top1_images = 0;
  std::string measured_by;  // "engine" or "fake-quant simulation"
};

[[nodiscard]] inline const std::vector<std::string>& importance_names() {
  static const std::vector<std::string> names{
      "none", "magnitude", "l2", "l1", "taylor", "hessian-fisher", "hessian-hutchinson"};
  return names;
}

[[nodiscard]] inline const std::vector<std::string>& group_names() {
  static const std::vector<std::string> names{"heads", "mlp", "embed", "qk", "v", "blocks"};
  return names;
}

namespace detail {

using CompressedJson = nlohmann::ordered_json;

[[noreturn]] inline void compressed_error(const std::string& field, const std::string& what) {
  VITC_THROW(FormatError(std::string(kCompressedMetadataKey) + ": field '" + field + "' " + what));
}

inline const CompressedJson& need_field(const CompressedJson& obj, const std::string& parent,
                                        const char* key) {
  const std::string field = parent.empty() ? key : parent + "." + key;
  const auto it = obj.find(key);
  if (it == obj.end()) compressed_error(field, "is missing");
  return *it;
}

inline void no_unknown_keys(const CompressedJson& obj, const std::string& parent,
                            std::initializer_list<const char*> known) {
  for (const auto& [key, value] : obj.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) compressed_error(parent.empty() ? key : parent + "." + key, "is not known");
  }
}

inline const CompressedJson& need_object(const CompressedJson& obj, const std::string& parent,
                                         const char* key) {
  const auto& v = need_field(obj, parent, key);
  if (!v.is_object())
    compressed_error(parent.empty() ? key : parent + "." + key, "must be an object");
  return v;
}

inline std::int64_t need_int(const CompressedJson& obj, const std::string& parent, const char* key,
                             std::int64_t lo, std::int64_t hi) {
  const std::string field = parent + "." + key;
  const auto& v = need_field(obj, parent, key);
  if (!v.is_number_integer()) compressed_error(field, "must be an integer");
  // Unsigned values above int64 are out of range too.
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
    compressed_error(field, "is out of range");
  const auto x = v.get<std::int64_t>();
  if (x < lo || x > hi)
    compressed_error(field, "= " + std::to_string(x) + " outside [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "]");
  return x;
}

inline double need_number(const CompressedJson& obj, const std::string& parent, const char* key) {
  const auto& v = need_field(obj, parent, key);
  if (!v.is_number()) compressed_error(parent + "." + key, "must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x)) compressed_error(parent + "." + key, "must be finite");
  return x;
}

inline std::string need_string(const CompressedJson& obj, const std::string& parent,
                               const char* key) {
  const auto& v = need_field(obj, parent, key);
  if (!v.is_string()) compressed_error(parent + "." + key, "must be a string");
  return v.get<std::string>();
}

inline bool one_of(const std::string& s, const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (s == n) return true;
  return false;
}

}  // namespace detail

// The "vitc.compressed" JSON of `info` (validated first: an invalid record is an ArgumentError).
[[nodiscard]] inline std::string compression_info_json(const CompressionInfo& info) {
  const auto bad = [](const std::string& what) {
    VITC_THROW(ArgumentError(std::string("CompressionInfo: ") + what));
  };
  if (!(info.prune_ratio >= 0 && info.prune_ratio < 1)) bad("prune_ratio must be in [0, 1)");
  if (!detail::one_of(info.importance, importance_names()))
    bad("unknown importance '" + info.importance + "'");
  for (const auto& g : info.groups)
    if (!detail::one_of(g, group_names())) bad("unknown group '" + g + "'");
  if (info.round_to < 1) bad("round_to must be >= 1");
  if (info.finetune_epochs < 0 || info.qat_epochs < 0) bad("epochs must be >= 0");
  if (info.calibration_images < 1) bad("calibration_images must be >= 1");
  if (info.quant_config.empty()) bad("quant_config is empty");
  if (info.source_parameters < 1 || info.source_macs < 1) bad("source sizes must be >= 1");
  if (info.top1 && !(*info.top1 >= 0 && *info.top1 <= 1)) bad("top1 must be in [0, 1]");
  if (info.top1 && info.top1_images < 1) bad("top1_images must be >= 1");
  if (info.top1 && info.measured_by != "engine" && info.measured_by != "fake-quant simulation")
    bad("measured_by must be 'engine' or 'fake-quant simulation'");
  detail::CompressedJson j;
  j["format_version"] = kCompressedFormatVersion;
  j["recipe"] = {{"prune_ratio", info.prune_ratio},
                 {"importance", info.importance},
                 {"groups", info.groups},
                 {"round", info.round_to},
                 {"finetune_epochs", info.finetune_epochs},
                 {"qat_epochs", info.qat_epochs},
                 {"calibration_images", info.calibration_images},
                 {"quant_config", info.quant_config}};
  j["source"] = {{"parameters", info.source_parameters}, {"macs_per_image", info.source_macs}};
  if (!info.source_file.empty()) j["source"]["file"] = info.source_file;
  if (info.top1)
    j["accuracy"] = {
        {"top1", *info.top1}, {"test_images", info.top1_images}, {"measured_by", info.measured_by}};
  return j.dump();
}

// Parses and validates a "vitc.compressed" JSON; FormatError naming the field on any problem.
[[nodiscard]] inline CompressionInfo parse_compression_info(const std::string& text) {
  using detail::compressed_error;
  const auto j = detail::CompressedJson::parse(text, nullptr, false);
  if (j.is_discarded()) compressed_error("(whole)", "is not valid JSON");
  if (!j.is_object()) compressed_error("(whole)", "must be a JSON object");
  detail::no_unknown_keys(j, "", {"format_version", "recipe", "source", "accuracy"});
  const auto& version = detail::need_field(j, "", "format_version");
  if (!version.is_number_integer() || version.get<std::int64_t>() != kCompressedFormatVersion)
    compressed_error("format_version", "must be " + std::to_string(kCompressedFormatVersion) +
                                           " (got " + version.dump() + ")");
  CompressionInfo info;
  const auto& r = detail::need_object(j, "", "recipe");
  detail::no_unknown_keys(r, "recipe",
                          {"prune_ratio", "importance", "groups", "round", "finetune_epochs",
                           "qat_epochs", "calibration_images", "quant_config"});
  info.prune_ratio = detail::need_number(r, "recipe", "prune_ratio");
  if (!(info.prune_ratio >= 0 && info.prune_ratio < 1))
    compressed_error("recipe.prune_ratio", "must be in [0, 1)");
  info.importance = detail::need_string(r, "recipe", "importance");
  if (!detail::one_of(info.importance, importance_names()))
    compressed_error("recipe.importance", "'" + info.importance + "' is not an estimator");
  const auto& groups = detail::need_field(r, "recipe", "groups");
  if (!groups.is_array()) compressed_error("recipe.groups", "must be an array");
  for (const auto& g : groups) {
    if (!g.is_string() || !detail::one_of(g.get<std::string>(), group_names()))
      compressed_error("recipe.groups", "holds " + g.dump() + ", not a group name");
    info.groups.push_back(g.get<std::string>());
  }
  constexpr std::int64_t kMaxCount = std::int64_t{1} << 40;
  info.round_to = detail::need_int(r, "recipe", "round", 1, 1 << 20);
  info.finetune_epochs =
      static_cast<int>(detail::need_int(r, "recipe", "finetune_epochs", 0, 1 << 20));
  info.qat_epochs = static_cast<int>(detail::need_int(r, "recipe", "qat_epochs", 0, 1 << 20));
  info.calibration_images = detail::need_int(r, "recipe", "calibration_images", 1, kMaxCount);
  info.quant_config = detail::need_string(r, "recipe", "quant_config");
  if (info.quant_config.empty()) compressed_error("recipe.quant_config", "is empty");

  const auto& s = detail::need_object(j, "", "source");
  detail::no_unknown_keys(s, "source", {"parameters", "macs_per_image", "file"});
  info.source_parameters = detail::need_int(s, "source", "parameters", 1, kMaxCount * 1024);
  info.source_macs = detail::need_int(s, "source", "macs_per_image", 1, kMaxCount * 1024);
  if (s.contains("file")) info.source_file = detail::need_string(s, "source", "file");

  if (j.contains("accuracy")) {
    const auto& a = detail::need_object(j, "", "accuracy");
    detail::no_unknown_keys(a, "accuracy", {"top1", "test_images", "measured_by"});
    const double top1 = detail::need_number(a, "accuracy", "top1");
    if (!(top1 >= 0 && top1 <= 1)) compressed_error("accuracy.top1", "must be in [0, 1]");
    info.top1 = top1;
    info.top1_images = detail::need_int(a, "accuracy", "test_images", 1, kMaxCount);
    info.measured_by = detail::need_string(a, "accuracy", "measured_by");
    if (info.measured_by != "engine" && info.measured_by != "fake-quant simulation")
      compressed_error("accuracy.measured_by", "must be 'engine' or 'fake-quant simulation'");
  }
  return info;
}

// Whether a checkpoint is a compressed one (has "vitc.compressed" metadata).
[[nodiscard]] inline bool is_compressed_checkpoint(const io::SafetensorsReader& reader) {
  return reader.metadata().contains(kCompressedMetadataKey);
}

// Writes `model` (weights quantized, activations calibrated) with `info` (its quant_config must
// be the model's configuration name) plus `extra_metadata`.
inline void save_compressed(const std::filesystem::path& path, quant::FakeQuantViT& model,
                            const CompressionInfo& info,
                            const std::map<std::string, std::string>& extra_metadata = {}) {
  if (info.quant_config != model.config().name)
    VITC_THROW(ArgumentError("save_compressed: quant_config '" + info.quant_config +
                             "' is not the model's configuration '" + model.config().name + "'"));
  const auto& c = model.master_weights().config;
  if (info.source_parameters < c.parameter_count() || info.source_macs < c.macs_per_image())
    VITC_THROW(
        ArgumentError("save_compressed: the source model is smaller than the compressed one"));
  auto metadata = extra_metadata;
  metadata[kCompressedMetadataKey] = compression_info_json(info);
  quant::quantized_writer(model, metadata).write(path);
}

// A loaded compressed checkpoint: the calibrated fake-quant model (what engine::IntViT is built
// from) and its record.
struct CompressedModel {
  quant::FakeQuantViT model;
  CompressionInfo info;
};

[[nodiscard]] inline CompressedModel load_compressed(const io::SafetensorsReader& reader,
                                                     ThreadPool* pool = nullptr) {
  const auto it = reader.metadata().find(kCompressedMetadataKey);
  if (it == reader.metadata().end())
    VITC_THROW(FormatError(std::string("not a compressed checkpoint: no '") +
                           kCompressedMetadataKey + "' metadata"));
  // The record first: it is cheap and names the field at fault.
  CompressionInfo info = parse_compression_info(it->second);
  quant::FakeQuantViT model = quant::load_quantized(reader, pool);
  if (info.quant_config != model.config().name)
    detail::compressed_error("recipe.quant_config", "'" + info.quant_config +
                                                        "' disagrees with vitc.quant's name '" +
                                                        model.config().name + "'");
  const auto& c = model.master_weights().config;
  if (info.source_parameters < c.parameter_count())
    detail::compressed_error("source.parameters", "is below the compressed model's " +
                                                      std::to_string(c.parameter_count()));
  if (info.source_macs < c.macs_per_image())
    detail::compressed_error("source.macs_per_image", "is below the compressed model's " +
                                                          std::to_string(c.macs_per_image()));
  return {std::move(model), std::move(info)};
}

[[nodiscard]] inline CompressedModel load_compressed(const std::filesystem::path& path,
                                                     ThreadPool* pool = nullptr) {
  return load_compressed(io::SafetensorsReader::open(path), pool);
}

}  // namespace vitc::engine
