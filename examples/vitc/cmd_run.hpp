// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc run: runs a model on the tensor named `input` (NCHW float32) of a safetensors file and
// writes the tensor `logits` [N, classes] to another.

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "common.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"

namespace vitc::cli {

struct RunOptions {
  std::string model, input, output;
};

inline void run_run(const RunOptions& o, const CommonOptions& common) {
  const auto weights = model::load_vit<float>(o.model);
  const auto reader = io::SafetensorsReader::open(o.input);
  const auto input = reader.read<float, 4>("input");
  const auto& c = weights.config;
  const Shape<4> expected{input.extent(0), c.in_channels, c.image_size, c.image_size};
  expect_shape(input.cview(), expected, "input (NCHW) of " + o.input);
  for (float v : input.span())
    if (!std::isfinite(v))
      VITC_THROW(ArgumentError("input of " + o.input + " holds NaN or infinity"));
  ThreadPool pool(common.threads);
  model::ViTWorkspace<float> ws;
  const auto logits = model::vit_logits(weights, input.cview(), ws, &pool);
  io::SafetensorsWriter writer;
  writer.add("logits", logits.cview());
  writer.write(o.output);
  if (common.json) {
    print_json(Json{{"output", o.output}, {"batch", input.extent(0)}, {"classes", c.num_classes}});
  } else {
    std::printf("wrote %s: logits [%lld, %lld]\n", o.output.c_str(),
                static_cast<long long>(input.extent(0)), static_cast<long long>(c.num_classes));
  }
}

template <class AddCommon>
void register_run(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<RunOptions>();
  auto* sub = app.add_subcommand("run", "Run a model on the tensor 'input' of a safetensors file");
  add_common(sub);
  sub->add_option("model", o->model, "Checkpoint (.safetensors)")->required();
  sub->add_option("input", o->input, "Input file with a float32 tensor 'input' [N, C, H, W]")
      ->required();
  sub->add_option("-o,--output", o->output, "Output file (tensor 'logits')")->required();
  sub->callback([o, &common] { run_run(*o, common); });
}

}  // namespace vitc::cli
