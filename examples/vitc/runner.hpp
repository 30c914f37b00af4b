// SPDX-License-Identifier: Apache-2.0
#pragma once
// A model file ready to predict, whatever it holds: a float checkpoint (the fp32 forward), or a
// quantized / compressed checkpoint run by the integer engine (engine::IntViT) when the engine
// supports its configuration, else by the fake-quant simulation it was calibrated in. Shared by
// vitc eval, run, bench and sweep; `runs_on()` says which computation ran.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/engine/int_vit.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/packed_vit.hpp"
#include "vitcompress/model/train.hpp"
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

}  // namespace vitc::cli
