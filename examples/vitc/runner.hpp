// SPDX-License-Identifier: Apache-2.0
#pragma once
// A model file ready to predict, whatever it holds: a float checkpoint (the fp32 forward), or a
// quantized / compressed checkpoint run by the integer engine (engine::IntViT) when the engine
// supports its configuration, else by the fake-quant simulation it was calibrated in. Shared by
// vitc eval, run, bench and sweep; `runs_on()` says which computation ran.

#include <algorithm>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/engine/int_vit.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/image_batches.hpp"
#include "vitcompress/model/packed_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace vitc::cli {

inline constexpr const char* kRunsOnEngine = "engine";
inline constexpr const char* kRunsOnSimulation = "fake-quant simulation";
inline constexpr const char* kRunsOnFloat = "fp32 forward";

class ModelRunner {
 public:
  // Loads `path`. Quantized models get the integer engine with buffers for batches up to
  // `max_batch` unless `simulate` (or the engine rejects the configuration: engine_note() says
  // why).
  ModelRunner(const std::string& path, Index max_batch, ThreadPool* pool, bool simulate = false)
      : pool_(pool) {
    const auto reader = io::SafetensorsReader::open(path);
    if (!quant::is_quantized_checkpoint(reader)) {
      // The float inference path: weights packed once (model/packed_vit.hpp).
      packed_.emplace(model::load_vit<float>(reader));
      config_ = packed_->config();
      precision_ = "fp32";
      return;
    }
    if (engine::is_compressed_checkpoint(reader)) {
      auto c = engine::load_compressed(reader, pool);
      fq_ = std::make_unique<quant::FakeQuantViT>(std::move(c.model));
      info_ = std::move(c.info);
    } else {
      fq_ = std::make_unique<quant::FakeQuantViT>(quant::load_quantized(reader, pool));
    }
    if (const auto it = reader.metadata().find("vitc.quant.calibration");
        it != reader.metadata().end())
      calibration_ = Json::parse(it->second, nullptr, false);
    quantized_ = true;
    config_ = fq_->master_weights().config;
    precision_ = fq_->config().name;
    if (simulate) {
      engine_note_ = "simulation asked for (--simulate)";
      return;
    }
    try {
      engine_ = std::make_unique<engine::IntViT<>>(*fq_, max_batch, pool);
    } catch (const ArgumentError& e) {
      engine_note_ = e.what();  // a configuration the engine does not run (yet)
    }
  }

  [[nodiscard]] const model::ViTConfig& config() const noexcept { return config_; }
  [[nodiscard]] Index num_classes() const noexcept { return config_.num_classes; }
  [[nodiscard]] const std::string& precision() const noexcept { return precision_; }
  [[nodiscard]] bool quantized() const noexcept { return quantized_; }
  [[nodiscard]] const char* runs_on() const noexcept {
    return engine_ ? kRunsOnEngine : quantized_ ? kRunsOnSimulation : kRunsOnFloat;
  }
  [[nodiscard]] const std::string& engine_note() const noexcept { return engine_note_; }
  [[nodiscard]] const std::optional<engine::CompressionInfo>& compression() const noexcept {
    return info_;
  }
  [[nodiscard]] const Json& calibration() const noexcept { return calibration_; }
  // The fake-quant model (null after release_simulation()).
  [[nodiscard]] quant::FakeQuantViT* fake_quant() noexcept { return fq_.get(); }
  // Frees the fake-quant model when the engine runs (the engine keeps its own packed copy), so
  // that memory measurements see the deployed model only.
  void release_simulation() noexcept {
    if (engine_) fq_.reset();
  }

  void predict(TensorView<const float, 4> images, TensorView<float, 2> logits) {
    if (engine_) {
      engine_->run(images, logits);
    } else if (fq_) {
      fq_->predict(images, logits);
    } else {
      packed_->forward(images, logits, pool_);
    }
  }

 private:
  ThreadPool* pool_;
  model::ViTConfig config_;
  std::string precision_;
  std::optional<model::PackedViT> packed_;
  std::unique_ptr<quant::FakeQuantViT> fq_;
  bool quantized_ = false;
  std::unique_ptr<engine::IntViT<>> engine_;
  std::string engine_note_;
  std::optional<engine::CompressionInfo> info_;
  Json calibration_;
};

// Top-1 of `runner` on `data` in batches of at most `batch` images (no augmentation).
inline double runner_top1(ModelRunner& runner, const model::LabeledImages& data,
                          const model::ImageNormalization& norm, Index batch) {
  const Index n = data.size(), classes = runner.num_classes();
  if (n == 0) VITC_THROW(ArgumentError("evaluation: the data set is empty"));
  Tensor<float, 4> x({std::min(batch, n), 1, data.images.extent(1), data.images.extent(2)});
  Tensor<float, 2> z({std::min(batch, n), classes});
  std::vector<Index> idx;
  Index correct = 0;
  for (Index start = 0; start < n; start += batch) {
    const Index b = std::min(batch, n - start);
    idx.resize(static_cast<std::size_t>(b));
    std::iota(idx.begin(), idx.end(), start);
    auto xb = x.view().slice(0, 0, b);
    auto zb = z.view().slice(0, 0, b);
    model::make_image_batch(data.images, idx, norm, {}, nullptr, xb);
    runner.predict(TensorView<const float, 4>(xb), zb);
    for (Index i = 0; i < b; ++i) {
      Index arg = 0;
      for (Index c = 1; c < classes; ++c)
        if (zb(i, c) > zb(i, arg)) arg = c;
      if (arg == static_cast<Index>(data.labels(start + i))) ++correct;
    }
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

}  // namespace vitc::cli
