// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc info: the configuration of a checkpoint, its metadata, and every tensor in it.

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "common.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"

namespace vitc::cli {

inline void run_info(const std::string& path, const CommonOptions& common) {
  const auto reader = io::SafetensorsReader::open(path);
  Json tensors = Json::array();
  std::size_t data_bytes = 0;
  for (const auto& t : reader.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"dtype", std::string(io::dtype_name(t.dtype))},
                       {"shape", t.shape},
                       {"bytes", t.bytes.size()}});
    data_bytes += t.bytes.size();
  }
  Json metadata = Json::object();
  for (const auto& [k, v] : reader.metadata()) metadata[k] = v;
  const auto config = model::infer_vit_config(reader);
  Json out{{"file", path},
           {"file_bytes", file_bytes(path)},
           {"data_bytes", data_bytes},
           {"config", Json::parse(config.to_json())},
           {"parameters", config.parameter_count()},
           {"macs_per_image", config.macs_per_image()},
           {"metadata", metadata},
           {"tensors", tensors}};
  if (common.json) {
    print_json(out);
    return;
  }
  std::printf("file        %s (%s)\n", path.c_str(),
              human_bytes(static_cast<double>(file_bytes(path))).c_str());
  std::printf("config      %s\n", config.to_json().c_str());
  std::printf("parameters  %lld, MACs per image %lld\n",
              static_cast<long long>(config.parameter_count()),
              static_cast<long long>(config.macs_per_image()));
  for (const auto& [k, v] : reader.metadata())
    std::printf("metadata    %s = %s\n", k.c_str(), v.c_str());
  std::printf("%-36s %-5s %-18s %s\n", "tensor", "dtype", "shape", "bytes");
  for (const auto& t : reader.tensors()) {
    std::string shape = "[";
    for (std::size_t i = 0; i < t.shape.size(); ++i)
      shape += (i ? ", " : "") + std::to_string(t.shape[i]);
    shape += "]";
    std::printf("%-36s %-5s %-18s %zu\n", t.name.c_str(),
                std::string(io::dtype_name(t.dtype)).c_str(), shape.c_str(), t.bytes.size());
  }
}

template <class AddCommon>
void register_info(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto path = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("info", "Show a checkpoint's configuration and tensors");
  add_common(sub);
  sub->add_option("model", *path, "Checkpoint (.safetensors)")->required();
  sub->callback([path, &common] { run_info(*path, common); });
}

}  // namespace vitc::cli
