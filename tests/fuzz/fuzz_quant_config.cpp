// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the quantization configuration reader, QuantConfig::from_json (the JSON
// file of `vitc quantize --config`, `vitc compress --quant` and `vitc profile --quant`): any
// bytes. Only vitc::Error may escape; a configuration that is returned must be valid and read
// back equal from its own to_json().

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "vitcompress/quant/quant_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using vitc::quant::QuantConfig;
  const std::string text(reinterpret_cast<const char*>(data), size);
  QuantConfig c;
  try {
    c = QuantConfig::from_json(text);
  } catch (const vitc::Error&) {
    return 0;
  }
  c.validate();  // from_json returned it, so it must be valid: an exception here is a crash
  const QuantConfig back = QuantConfig::from_json(c.to_json());
  if (back.name != c.name || back.weights != c.weights || back.activations != c.activations ||
      back.overrides != c.overrides || back.other_params != c.other_params) {
    std::fprintf(stderr, "fuzz_quant_config: to_json/from_json changed the configuration\n");
    std::abort();
  }
  return 0;
}
