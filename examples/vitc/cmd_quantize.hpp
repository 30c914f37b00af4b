// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc quantize: post-training quantization (calibration on training images) and optional
// quantization-aware fine-tuning of a float checkpoint, saved as a quantized checkpoint
// (quant/quantized_checkpoint.hpp). Also the evaluator `vitc eval` calls for such checkpoints.
//
//   vitc quantize MODEL --config w8a8 [--calib N] [--qat-epochs E] -o OUT [--eval]
//
// --config takes a named configuration (fp16, w8a8, w8a8-log2attn, w4a8, w4a8-log2attn, w4a4) or
// a JSON file (quant/quant_config.hpp; {"base": "w4a8", "overrides": {...}} for per-layer bits).
// Calibration uses the first N images of the Fashion-MNIST TRAINING split (never test images).
// QAT trains on the training split (or its first --train-limit images) with AdamW, a cosine
// schedule from --qat-lr, label smoothing 0.1, the augmentation given (--flip, --shift: pass what
// the float model was trained with) and no test-set evaluation during training; --eval evaluates
// the result on the test split once at the end.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>

#include "cmd_eval.hpp"
#include "cmd_train.hpp"
#include "common.hpp"
#include "progress.hpp"
#include "runner.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/train.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/quant_config.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace vitc::cli {

struct QuantizeOptions {
  std::string model;
  std::string output;
  std::string config = "w8a8";
  Index calib = 256;  // calibration images (first N of the training split)
  Index calib_batch = 64;
  int qat_epochs = 0;
  double qat_lr = 1e-4;
  double qat_min_lr = 1e-6;
  Index qat_batch = 128;
  double qat_wd = 0.05;
  Index train_limit = 0;  // QAT on the first N training images (0: all 60,000)
  bool lsq = false;       // QAT: learn the scales too (LSQ-style)
  bool flip = false;      // QAT augmentation: use what the float model was trained with
  int shift = 0;
  bool eval = false;  // evaluate the result on the test split
  Index eval_limit = 0;
};

// A named configuration, or a JSON file holding one.
inline quant::QuantConfig quant_config_from_option(const std::string& value) {
  for (const std::string& name : quant::QuantConfig::names())
    if (value == name) return quant::QuantConfig::named(value);
  if (!std::filesystem::exists(value))
    return quant::QuantConfig::named(value);  // throws, listing the names
  std::ifstream in(value);
  if (!in) VITC_THROW(IoError("cannot read quantization config '" + value + "'"));
  std::stringstream text;
  text << in.rdbuf();
  quant::QuantConfig c = quant::QuantConfig::from_json(text.str());
  if (c.name == "custom") c.name = std::filesystem::path(value).stem().string();
  return c;
}

// Bytes of the quantized weights alone (codes + scales), from the checkpoint's tensors.
inline Json checkpoint_breakdown(const io::SafetensorsReader& r) {
  std::uintmax_t codes = 0, weight_scales = 0, activation_params = 0, other = 0;
  for (const io::TensorInfo& t : r.tensors()) {
    const auto n = t.bytes.size();
    if (t.name.ends_with(".qweight"))
      codes += n;
    else if (t.name.starts_with("quant."))
      activation_params += n;
    else if (t.name.ends_with(".weight.scale") || t.name.ends_with(".weight.zero_point"))
      weight_scales += n;
    else
      other += n;
  }
  return Json{{"weight_codes", codes},
              {"weight_scales", weight_scales},
              {"activation_params", activation_params},
              {"float_params", other}};
}

// What calibrate_and_train did.
struct QuantizeRun {
  double calib_seconds = 0, qat_seconds = 0;
  Json epochs = Json::array();
  Json record;  // the "vitc.quant.calibration" record: how the file was made
};

// PTQ (weights quantized, activations calibrated on the first o.calib training images), then
// o.qat_epochs of quantization-aware training; progress bars if `show`.
inline QuantizeRun calibrate_and_train(quant::FakeQuantViT& fq, const QuantizeOptions& o,
                                       const io::Dataset& train_set, int threads, bool show) {
  const auto calib_data = labeled(train_set);
  if (o.calib < 1 || o.calib > calib_data.size())
    VITC_THROW(ArgumentError("--calib " + std::to_string(o.calib) + " outside [1, " +
                             std::to_string(calib_data.size()) + "]"));
  const quant::QuantConfig& config = fq.config();

  // PTQ.
  const auto t_calib = std::chrono::steady_clock::now();
  fq.quantize_weights();
  {
    ProgressBar bar("calibrate", show);
    fq.calibrate(calib_data, o.calib, {}, o.calib_batch, [&](Index done, Index total) {
      bar.update(static_cast<double>(done) / static_cast<double>(total),
                 std::to_string(done) + "/" + std::to_string(total) + " images");
    });
    bar.finish();
  }
  const double calib_seconds = seconds_since(t_calib);

  // QAT.
  double qat_seconds = 0;
  Json epochs = Json::array();
  const auto train_data = labeled(train_set, o.train_limit);
  model::TrainConfig tc;
  tc.epochs = o.qat_epochs;
  tc.batch_size = o.qat_batch;
  tc.lr = o.qat_lr;
  tc.min_lr = o.qat_min_lr;
  tc.warmup_epochs = 0;
  tc.adamw.weight_decay = o.qat_wd;
  tc.label_smoothing = 0.1;
  tc.augment.horizontal_flip = o.flip;
  tc.augment.max_shift = o.shift;
  tc.seed = 1;
  if (o.qat_epochs > 0) {
    const auto t_qat = std::chrono::steady_clock::now();
    if (o.lsq) fq.enable_learned_scales();
    ProgressBar bar("qat", show);
    auto on_progress = [&](const model::TrainProgress& p) {
      char detail[160];
      std::snprintf(detail, sizeof detail,
                    "epoch %d/%d loss %.4f acc %.2f%% lr %.2e %.0f img/s ETA %s", p.epoch, p.epochs,
                    p.loss, 100 * p.accuracy, p.lr, p.images_per_second,
                    format_duration(p.eta_seconds).c_str());
      bar.update((static_cast<double>(p.epoch - 1) +
                  static_cast<double>(p.step) / static_cast<double>(p.steps_per_epoch)) /
                     p.epochs,
                 detail);
    };
    auto on_epoch = [&](const model::EpochResult& r) {
      epochs.push_back({{"epoch", r.epoch},
                        {"train_loss", r.train_loss},
                        {"train_accuracy", r.train_accuracy},
                        {"seconds", r.seconds}});
      if (show) {
        bar.finish();
        std::fprintf(stderr, "qat epoch %d: loss %.4f, train %.2f%%, %.1f s\n", r.epoch,
                     r.train_loss, 100 * r.train_accuracy, r.seconds);
      }
    };
    (void)model::train(fq, train_data, nullptr, tc, on_progress, on_epoch);
    qat_seconds = seconds_since(t_qat);
  }

  Json record{{"source", o.model},
              {"config", config.name},
              {"calibration_images", o.calib},
              {"calibration_split", "train"},
              {"calibration_seconds", calib_seconds},
              {"qat_epochs", o.qat_epochs},
              {"qat_seconds", qat_seconds},
              {"threads", threads}};
  if (o.qat_epochs > 0) {
    record["qat"] = train_config_json(tc);
    record["qat_learned_scales"] = o.lsq;
    record["qat_train_images"] = train_data.size();
  }
  return {calib_seconds, qat_seconds, std::move(epochs), std::move(record)};
}

inline void run_quantize(const QuantizeOptions& o, const CommonOptions& common) {
  const auto start = std::chrono::steady_clock::now();
  quant::QuantConfig config = quant_config_from_option(o.config);
  auto weights = model::load_vit<float>(o.model);
  const auto train_set = io::load_fashion_mnist(io::Split::kTrain);
  ThreadPool pool(common.threads);
  quant::FakeQuantViT fq(std::move(weights), config, &pool);
  const bool show = !common.json && !common.quiet;
  const QuantizeRun run = calibrate_and_train(fq, o, train_set, common.threads, show);
  const double calib_seconds = run.calib_seconds, qat_seconds = run.qat_seconds;
  const Json& epochs = run.epochs;
  quant::save_quantized(o.output, fq, {{"vitc.quant.calibration", run.record.dump()}});
  const auto bytes = file_bytes(o.output);
  const auto reader = io::SafetensorsReader::open(o.output);

  Json out{{"output", o.output},
           {"config", config.name},
           {"model_bytes", bytes},
           {"bytes", checkpoint_breakdown(reader)},
           {"calibration_images", o.calib},
           {"calibration_seconds", calib_seconds},
           {"qat_epochs", o.qat_epochs},
           {"qat_seconds", qat_seconds},
           {"epochs", epochs}};
  if (o.eval) {
    const auto test_set = io::load_fashion_mnist(io::Split::kTest);
    const auto test_data = labeled(test_set, o.eval_limit);
    out["test_images"] = test_data.size();
    out["top1"] = model::evaluate_top1(fq, test_data, {});
  }
  out["seconds"] = seconds_since(start);
  if (common.json) {
    print_json(out);
    return;
  }
  std::printf("saved %s (%s): %s, calibration %.1f s on %lld training images", o.output.c_str(),
              config.name.c_str(), human_bytes(static_cast<double>(bytes)).c_str(), calib_seconds,
              static_cast<long long>(o.calib));
  if (o.qat_epochs > 0) std::printf(", QAT %d epochs %.1f s", o.qat_epochs, qat_seconds);
  std::printf("\n");
  if (o.eval)
    std::printf("top-1 %.2f%% on %lld test images\n", 100 * out["top1"].get<double>(),
                static_cast<long long>(out["test_images"].get<Index>()));
}

// `vitc eval` on a quantized checkpoint (declared in cmd_eval.hpp).
inline bool is_quantized_model(const std::string& path) {
  return quant::is_quantized_checkpoint(io::SafetensorsReader::open(path));
}

inline Json compression_json(const engine::CompressionInfo& i) {
  return Json::parse(engine::compression_info_json(i));
}

inline void run_eval_quantized(const EvalOptions& o, const CommonOptions& common) {
  ThreadPool pool(common.threads);
  constexpr Index kEvalBatch = 256;
  ModelRunner runner(o.model, kEvalBatch, &pool, o.simulate);
  const auto test_set = io::load_fashion_mnist(io::Split::kTest);
  const auto test_data = labeled(test_set, o.limit);
  const auto t0 = std::chrono::steady_clock::now();
  const double top1 = model::evaluate_top1(runner, test_data, {}, kEvalBatch);
  const double eval_seconds = seconds_since(t0);
  const auto latency = measure_latency([&](auto x, auto z) { runner.predict(x, z); }, test_data, {},
                                       runner.num_classes(), o.latency_runs);
  const auto bytes = file_bytes(o.model);
  const auto reader = io::SafetensorsReader::open(o.model);
  const auto& cfg = runner.config();
  const bool simulated = std::string(runner.runs_on()) != kRunsOnEngine;
  Json out{{"model", o.model},
           {"precision", runner.precision()},
           {"runs_on", runner.runs_on()},
           {"simulated", simulated},
           {"test_images", test_data.size()},
           {"top1", top1},
           {"parameters", cfg.parameter_count()},
           {"macs_per_image", cfg.macs_per_image()},
           {"model_bytes", bytes},
           {"bytes", checkpoint_breakdown(reader)},
           {"latency_ms_p50", latency.p50_ms},
           {"latency_ms_p90", latency.p90_ms},
           {"threads", common.threads},
           {"eval_seconds", eval_seconds},
           {"peak_rss_bytes", peak_rss_bytes()}};
  if (!runner.engine_note().empty()) out["engine_note"] = runner.engine_note();
  if (!runner.calibration().is_null()) out["quantization"] = runner.calibration();
  if (runner.compression()) out["compression"] = compression_json(*runner.compression());
  if (common.json) {
    print_json(out);
    return;
  }
  std::printf("model            %s (%s, run by the %s)\n", o.model.c_str(),
              runner.precision().c_str(), runner.runs_on());
  if (!runner.engine_note().empty())
    std::printf("                 not the integer engine: %s\n", runner.engine_note().c_str());
  if (const auto& c = runner.compression()) {
    std::printf("compressed       pruned %.4g%% (%s", 100 * c->prune_ratio, c->importance.c_str());
    for (const auto& g : c->groups) std::printf(" %s", g.c_str());
    std::printf("), fine-tune %d ep, QAT %d ep, %s; source %lld parameters\n", c->finetune_epochs,
                c->qat_epochs, c->quant_config.c_str(),
                static_cast<long long>(c->source_parameters));
  }
  std::printf("top-1            %.2f%% on %lld test images\n", 100 * top1,
              static_cast<long long>(test_data.size()));
  std::printf("parameters       %lld\n", static_cast<long long>(cfg.parameter_count()));
  std::printf("MACs per image   %lld\n", static_cast<long long>(cfg.macs_per_image()));
  std::printf("model bytes      %s (%llu B)\n", human_bytes(static_cast<double>(bytes)).c_str(),
              static_cast<unsigned long long>(bytes));
  std::printf(
      "latency, batch 1 p50 %.3f ms, p90 %.3f ms (%d threads; %s)\n", latency.p50_ms,
      latency.p90_ms, common.threads,
      simulated ? "fake-quantized float simulation, not the integer engine" : "integer engine");
  std::printf("peak RSS         %s\n", human_bytes(static_cast<double>(peak_rss_bytes())).c_str());
}

template <class AddCommon>
void register_quantize(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<QuantizeOptions>();
  auto* sub = app.add_subcommand(
      "quantize", "Quantize a float checkpoint (PTQ, optional QAT) into a quantized checkpoint");
  add_common(sub);
  sub->add_option("model", o->model, "Float checkpoint (.safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", o->output, "Quantized checkpoint to write")->required();
  sub->add_option("--config", o->config,
                  "fp16, w8a8, w8a8-log2attn, w4a8, w4a8-log2attn, w4a4, or a JSON file")
      ->capture_default_str();
  sub->add_option("--calib", o->calib, "Calibration images (first N of the training split)")
      ->check(CLI::Range(Index{1}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--calib-batch", o->calib_batch, "Calibration batch size")
      ->check(CLI::Range(Index{1}, Index{4096}))
      ->capture_default_str();
  sub->add_option("--qat-epochs", o->qat_epochs, "Quantization-aware training epochs (0: PTQ only)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  sub->add_option("--qat-lr", o->qat_lr, "QAT peak learning rate")->capture_default_str();
  sub->add_option("--qat-min-lr", o->qat_min_lr, "QAT final learning rate")->capture_default_str();
  sub->add_option("--qat-batch", o->qat_batch, "QAT mini-batch size")
      ->check(CLI::Range(Index{1}, Index{1} << 20))
      ->capture_default_str();
  sub->add_option("--qat-wd", o->qat_wd, "QAT AdamW weight decay")->capture_default_str();
  sub->add_option("--train-limit", o->train_limit, "QAT on the first N training images (0: all)")
      ->check(CLI::Range(Index{0}, Index{60000}))
      ->capture_default_str();
  sub->add_flag("--lsq", o->lsq, "QAT: also learn the quantization scales (LSQ-style)");
  sub->add_flag("--flip", o->flip, "QAT: random horizontal flips");
  sub->add_option("--shift", o->shift, "QAT: random shifts up to N pixels")
      ->check(CLI::Range(0, 13))
      ->capture_default_str();
  sub->add_flag("--eval", o->eval, "Evaluate the quantized model on the test split");
  sub->add_option("--eval-limit", o->eval_limit, "With --eval: only the first N test images")
      ->check(CLI::Range(Index{0}, Index{10000}))
      ->capture_default_str();
  sub->callback([o, &common] { run_quantize(*o, common); });
}

}  // namespace vitc::cli
