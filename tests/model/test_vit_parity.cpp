// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch: tests/data/reference/vit_small.safetensors was written by
// tests/reference/make_vit_reference.py (timm's DeiT architecture in torch 1.13, float64 reference
// outputs from float32 parameters). Torch is not needed to run this test.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;
namespace io = vitc::io;

namespace {

std::filesystem::path reference_path() {
  const char* env = std::getenv("VITC_TEST_DATA_DIR");
  const std::filesystem::path dir = env != nullptr ? env : VITC_TEST_DATA_DIR;
  return dir / "reference" / "vit_small.safetensors";
}

// max |a - b| over a tensor, relative to the reference tensor's largest magnitude (floored).
template <class A>
double tensor_rel_error(const A& ours, std::span<const float> ref) {
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(ours[i]) - ref[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  return diff / std::max(scale, 1e-6);
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("float ViT matches the PyTorch (timm DeiT) reference: logits and gradients") {
    const auto reader = io::SafetensorsReader::open(reference_path());
    model::LoadOptions options;
    options.num_heads = {std::stoll(reader.metadata().at("num_heads"))};
    options.allow_unknown_tensors = true;  // input, labels, logits, grad.* live in the same file
    const auto w = model::load_vit(reader, options);
    CHECK(w.config.image_size == 28);
    CHECK(w.config.patch_size == 7);
    CHECK(w.config.embed_dim == 32);
    CHECK(w.config.depth() == 2);
    CHECK(w.config.blocks[0] == model::BlockConfig{2, 16, 16, 64});
    CHECK(w.config.num_classes == 10);

    const auto input = reader.read<float, 4>("input");
    const auto labels = reader.read<std::int64_t, 1>("labels");
    const auto ref_logits = reader.read<float, 2>("logits");
    const Index batch = input.extent(0);

    for (int threads : {1, 2}) {
      CAPTURE(threads);
      vitc::ThreadPool pool(threads);
      model::ViTWorkspace<float> ws;
      Tensor<float, 2> logits({batch, 10});
      model::ViTWeights<float> grads;
      Tensor<float, 4> grad_input(input.shape());
      model::vit_forward(w, input.view(), logits.view(), ws, &pool, model::Pass::kTraining);
      double max_diff = 0.0;
      for (Index i = 0; i < logits.size(); ++i)
        max_diff = std::max(max_diff, double(std::abs(logits.data()[i] - ref_logits.data()[i])));
      MESSAGE("max |logits - torch| = " << max_diff);
      CHECK(max_diff <= 1e-4);

      Tensor<float, 2> g({batch, 10});
      const auto stats =
          model::softmax_cross_entropy(logits.cview(), labels.cview(), 0.0, g.view());
      CHECK(stats.loss_sum / static_cast<double>(batch) ==
            doctest::Approx(std::stod(reader.metadata().at("loss"))).epsilon(1e-5));
      model::vit_backward(w, ws, g.view(), grads, model::GradMode::kOverwrite, &pool,
                          grad_input.view());

      double worst = 0.0;
      grads.for_each([&](const std::string& name, auto view) {
        constexpr std::size_t kRank = decltype(view)::kRank;
        CAPTURE(name);
        const auto ref = reader.read<float, kRank>("grad." + name);
        REQUIRE(ref.shape() == view.shape());
        const double err = tensor_rel_error(view.data(), ref.span());
        worst = std::max(worst, err);
        CHECK(err <= 1e-3);
      });
      const auto ref_gx = reader.read<float, 4>("grad.input");
      const double gx_err = tensor_rel_error(grad_input.data(), ref_gx.span());
      CHECK(gx_err <= 1e-3);
      MESSAGE("worst parameter gradient error " << worst << ", input gradient " << gx_err);
    }
  }
}
