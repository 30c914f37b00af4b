// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc run: runs a model on the tensor named `input` (NCHW float32) of a safetensors file and
// writes the tensor `logits` [N, classes] to another. Float checkpoints run the fp32 forward;
// quantized and compressed ones the integer engine when it supports their configuration
// (otherwise, or with --simulate, the fake-quant simulation); the output says which ran.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "common.hpp"
#include "runner.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"

namespace vitc::cli {

struct RunOptions {
  std::string model, input, output;
  bool simulate = false;
};

inline void run_run(const RunOptions& o, const CommonOptions& common) {
  const auto reader = io::SafetensorsReader::open(o.input);
  const auto input = reader.read<float, 4>("input");
  ThreadPool pool(common.threads);
  ModelRunner runner(o.model, std::max<Index>(1, input.extent(0)), &pool, o.simulate);
  const auto& c = runner.config();
  const Shape<4> expected{input.extent(0), c.in_channels, c.image_size, c.image_size};
  expect_shape(input.cview(), expected, "input (NCHW) of " + o.input);
  for (float v : input.span())
    if (!std::isfinite(v))
      VITC_THROW(ArgumentError("input of " + o.input + " holds NaN or infinity"));
  Tensor<float, 2> logits({input.extent(0), c.num_classes});
  runner.predict(input.cview(), logits.view());
  io::SafetensorsWriter writer;
  writer.add("logits", logits.cview());
  writer.write(o.output);
  if (common.json) {
    print_json(Json{{"output", o.output},
                    {"batch", input.extent(0)},
                    {"classes", c.num_classes},
                    {"precision", runner.precision()},
                    {"runs_on", runner.runs_on()}});
  } else {
    std::printf("wrote %s: logits [%lld, %lld] (%s, %s)\n", o.output.c_str(),
                static_cast<long long>(input.extent(0)), static_cast<long long>(c.num_classes),
                runner.precision().c_str(), runner.runs_on());
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
  sub->add_flag("--simulate", o->simulate,
                "Quantized models: run the fake-quant simulation instead of the integer engine");
  sub->callback([o, &common] { run_run(*o, common); });
}

}  // namespace vitc::cli
