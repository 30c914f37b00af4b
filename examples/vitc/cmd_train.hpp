// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc train: trains a ViT on Fashion-MNIST with a progress bar and saves a safetensors checkpoint.

#include <cstdio>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "common.hpp"
#include "progress.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/model/train.hpp"
#include "vitcompress/model/trainable_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_weights.hpp"

namespace vitc::cli {

struct TrainOptions {
  std::string output;
  std::string init;  // continue from this checkpoint instead of a random model
  Index embed_dim = 96, depth = 6, heads = 4, mlp_hidden = 192, patch = 7;
  Index train_limit = 0;  // 0: all 60,000 training images
  model::TrainConfig train;
};

inline model::LabeledImages labeled(const io::Dataset& d, Index limit = 0) {
  model::LabeledImages out{d.images.cview(), d.labels.cview()};
  if (limit > 0 && limit < out.size()) {
    out.images = out.images.slice(0, 0, limit);
    out.labels = out.labels.slice(0, 0, limit);
  }
  return out;
}

inline Json train_config_json(const model::TrainConfig& t) {
  return Json{{"epochs", t.epochs},
              {"batch_size", t.batch_size},
              {"lr", t.lr},
              {"min_lr", t.min_lr},
              {"warmup_epochs", t.warmup_epochs},
              {"weight_decay", t.adamw.weight_decay},
              {"clip_grad_norm", t.adamw.clip_grad_norm},
              {"label_smoothing", t.label_smoothing},
              {"horizontal_flip", t.augment.horizontal_flip},
              {"max_shift", t.augment.max_shift},
              {"seed", t.seed}};
}

inline void run_train(const TrainOptions& o, const CommonOptions& common) {
  const auto start = std::chrono::steady_clock::now();
  model::ViTWeights<float> weights;
  if (!o.init.empty()) {
    weights = model::load_vit<float>(o.init);
  } else {
    const auto config =
        model::ViTConfig::uniform(28, o.patch, 1, o.embed_dim, o.depth, o.heads, o.mlp_hidden, 10);
    weights = model::ViTWeights<float>::random(config, o.train.seed);
  }
  const auto train_set = io::load_fashion_mnist(io::Split::kTrain);
  const auto test_set = io::load_fashion_mnist(io::Split::kTest);
  const auto train_data = labeled(train_set, o.train_limit);
  const auto test_data = labeled(test_set);

  ThreadPool pool(common.threads);
  model::TrainableViT<> trainable(weights, &pool);
  ProgressBar bar("train", !common.json && !common.quiet);
  Json epochs = Json::array();
  auto on_progress = [&](const model::TrainProgress& p) {
    char detail[160];
    std::snprintf(detail, sizeof detail,
                  "epoch %d/%d loss %.4f acc %.2f%% lr %.2e %.0f img/s ETA %s", p.epoch, p.epochs,
                  p.loss, 100 * p.accuracy, p.lr, p.images_per_second,
                  format_duration(p.eta_seconds).c_str());
    const double fraction =
        (static_cast<double>(p.epoch - 1) + static_cast<double>(p.step) / p.steps_per_epoch) /
        p.epochs;
    bar.update(fraction, detail);
  };
  auto on_epoch = [&](const model::EpochResult& r) {
    epochs.push_back({{"epoch", r.epoch},
                      {"train_loss", r.train_loss},
                      {"train_accuracy", r.train_accuracy},
                      {"test_accuracy", r.eval_accuracy},
                      {"seconds", r.seconds}});
    if (!common.json && !common.quiet) {
      bar.finish();
      std::fprintf(stderr, "epoch %d: loss %.4f, train %.2f%%, test %.2f%%, %.1f s\n", r.epoch,
                   r.train_loss, 100 * r.train_accuracy, 100 * r.eval_accuracy, r.seconds);
    }
  };
  const auto results =
      model::train(trainable, train_data, &test_data, o.train, on_progress, on_epoch);
  const double seconds = seconds_since(start);
  const double test_accuracy =
      results.empty() ? model::evaluate_top1(trainable, test_data, o.train.normalization)
                      : results.back().eval_accuracy;

  Json record{{"train", train_config_json(o.train)},
              {"train_images", train_data.size()},
              {"init", o.init},
              {"threads", common.threads},
              {"test_accuracy", test_accuracy},
              {"seconds", seconds}};
  model::save_vit(o.output, weights, {{"vitc.training", record.dump()}});

  Json out{{"output", o.output},
           {"parameters", weights.config.parameter_count()},
           {"test_accuracy", test_accuracy},
           {"seconds", seconds},
           {"train", train_config_json(o.train)},
           {"epochs", epochs}};
  if (common.json) {
    print_json(out);
  } else {
    std::printf("saved %s: %lld parameters, test top-1 %.2f%%, %.1f s\n", o.output.c_str(),
                static_cast<long long>(weights.config.parameter_count()), 100 * test_accuracy,
                seconds);
  }
}

template <class AddCommon>
void register_train(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<TrainOptions>();
  auto* sub = app.add_subcommand("train", "Train a ViT on Fashion-MNIST and save a checkpoint");
  add_common(sub);
  sub->add_option("-o,--output", o->output, "Checkpoint to write (.safetensors)")->required();
  sub->add_option("--init", o->init, "Start from this checkpoint instead of a random model")
      ->check(CLI::ExistingFile);
  sub->add_option("--embed-dim", o->embed_dim, "Embedding dimension")->capture_default_str();
  sub->add_option("--depth", o->depth, "Number of blocks")->capture_default_str();
  sub->add_option("--heads", o->heads, "Attention heads per block")->capture_default_str();
  sub->add_option("--mlp-hidden", o->mlp_hidden, "MLP hidden units")->capture_default_str();
  sub->add_option("--patch", o->patch, "Patch size (divides 28)")->capture_default_str();
  sub->add_option("--epochs", o->train.epochs, "Epochs")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  sub->add_option("--batch", o->train.batch_size, "Mini-batch size")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--lr", o->train.lr, "Peak learning rate")->capture_default_str();
  sub->add_option("--min-lr", o->train.min_lr, "Final learning rate of the cosine")
      ->capture_default_str();
  sub->add_option("--warmup", o->train.warmup_epochs, "Warm-up epochs")->capture_default_str();
  sub->add_option("--wd", o->train.adamw.weight_decay, "AdamW weight decay")->capture_default_str();
  sub->add_option("--clip", o->train.adamw.clip_grad_norm, "Clip the gradient norm (0: off)")
      ->capture_default_str();
  sub->add_option("--smoothing", o->train.label_smoothing, "Label smoothing")
      ->capture_default_str();
  sub->add_flag("--flip", o->train.augment.horizontal_flip, "Random horizontal flips");
  sub->add_option("--shift", o->train.augment.max_shift, "Random shifts up to N pixels")
      ->capture_default_str();
  sub->add_option("--seed", o->train.seed, "Random seed (initialisation, order, augmentation)")
      ->capture_default_str();
  sub->add_option("--train-limit", o->train_limit, "Use only the first N training images (0: all)")
      ->capture_default_str();
  sub->callback([o, &common] { run_train(*o, common); });
}

}  // namespace vitc::cli
