// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpus of fuzz_quant_config into DIR: every named configuration as JSON and a
// partial one with a base, kind defaults and per-point overrides (deterministic, so tests/fuzz/run
// regenerates it on every run).
//   usage: fuzz_quant_config_seeds DIR

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "vitcompress/quant/quant_config.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_quant_config_seeds DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  using vitc::quant::QuantConfig;
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / (name + ".json")) << text;
  };
  for (const std::string& name : QuantConfig::names())
    write(name, QuantConfig::named(name).to_json());
  write(
      "partial",
      R"({"base": "w4a8-g32", "name": "mixed", "weights": {"qkv": {"bits": 6, "group_scale_bits": 0,
    "granularity": "channel"}}, "activations": {"query": {"observer": "percentile",
    "percentile": 99.9}}, "overrides": {"blocks.0.mlp.fc1.weight": {"group_scale_bits": 5},
    "blocks.1.block_input": {"ptf": true}, "head.weight": {"scheme": "fp16"}}})");
  return 0;
}
