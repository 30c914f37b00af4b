// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "vit_test_util.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/model/packed_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"

namespace packed_vit_test {

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;
namespace arch = vitc::kernels::arch;

// 32x32 images, patch 4 (64 patches + class token), D = 64: large enough that every GEMM, the
// attention and the row loops split over two threads. Blocks of uneven sizes, as after pruning.
inline model::ViTConfig medium_config() {
  model::ViTConfig c;
  c.image_size = 32;
  c.patch_size = 4;
  c.in_channels = 3;
  c.embed_dim = 64;
  c.num_classes = 37;
  c.blocks = {model::BlockConfig{4, 16, 16, 128}, model::BlockConfig{3, 12, 20, 72},
              model::BlockConfig{2, 16, 8, 200}};
  return c;
}

inline double max_rel_diff(const Tensor<float, 2>& a, const Tensor<float, 2>& b) {
  double diff = 0.0, scale = 1e-6;
  for (Index i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a.data()[i]) - double(b.data()[i])));
    scale = std::max(scale, std::abs(double(b.data()[i])));
  }
  return diff / scale;
}

inline bool bit_identical(const Tensor<float, 2>& a, const Tensor<float, 2>& b) {
  for (Index i = 0; i < a.size(); ++i)
    if (std::bit_cast<std::uint32_t>(a.data()[i]) != std::bit_cast<std::uint32_t>(b.data()[i]))
      return false;
  return true;
}

inline Tensor<float, 2> packed_logits(model::PackedViT& net, const Tensor<float, 4>& images,
                                      vitc::ThreadPool* pool) {
  Tensor<float, 2> logits({images.extent(0), net.num_classes()});
  net.forward(images.cview(), logits.view(), pool);
  return logits;
}

// Sets VITC_ARCH for its lifetime, restoring the previous value.
class ScopedArchEnv {
 public:
  explicit ScopedArchEnv(const char* value) {
    const char* old = std::getenv("VITC_ARCH");
    had_ = old != nullptr;
    if (had_) saved_ = old;
    setenv("VITC_ARCH", value, 1);
  }
  ScopedArchEnv(const ScopedArchEnv&) = delete;
  ScopedArchEnv& operator=(const ScopedArchEnv&) = delete;
  ~ScopedArchEnv() {
    if (had_)
      setenv("VITC_ARCH", saved_.c_str(), 1);
    else
      unsetenv("VITC_ARCH");
  }

 private:
  bool had_ = false;
  std::string saved_;
};

TEST_SUITE("model") {
  TEST_CASE("PackedViT: same logits as vit_forward (uneven blocks, batch 1 and 3)") {
    for (const model::ViTConfig& c : {vitc::test::tiny_config(), medium_config()}) {
      const auto w = vitc::test::nontrivial_weights<float>(c, 5);
      model::PackedViT net(w);
      for (Index batch : {1, 3}) {
        const auto images = vitc::test::random_images<float>(c, batch, 9);
        model::ViTWorkspace<float> ws;
        const auto want = model::vit_logits(w, images.cview(), ws);
        const auto got = packed_logits(net, images, nullptr);
        CAPTURE(batch);
        CHECK(max_rel_diff(got, want) <= 2e-5);
        // A second pass on the same buffers gives the same bits.
        CHECK(bit_identical(packed_logits(net, images, nullptr), got));
      }
    }
  }

  TEST_CASE("PackedViT: one and two threads give bit-identical logits") {
    const model::ViTConfig c = medium_config();
    const auto w = vitc::test::nontrivial_weights<float>(c, 6);
    model::PackedViT net(w);
    vitc::ThreadPool pool(2);
    for (Index batch : {1, 2}) {
      const auto images = vitc::test::random_images<float>(c, batch, 10 + batch);
      CHECK(bit_identical(packed_logits(net, images, nullptr), packed_logits(net, images, &pool)));
    }
  }

  TEST_CASE("PackedViT: every GEMM path gives the scalar path's logits bit for bit") {
    const model::ViTConfig c = medium_config();
    const auto w = vitc::test::nontrivial_weights<float>(c, 7);
    const auto images = vitc::test::random_images<float>(c, 2, 12);
    Tensor<float, 2> reference;
    {
      const ScopedArchEnv env("scalar");
      model::PackedViT net(w);
      CHECK(net.arch() == arch::ArchId::kScalar);
      reference = packed_logits(net, images, nullptr);
    }
    for (arch::ArchId id : {arch::ArchId::kXsimd, arch::ArchId::kAvx2, arch::ArchId::kAvx512Vnni}) {
      if (!arch::is_available(id)) continue;
      const std::string name(arch::arch_name(id));
      const ScopedArchEnv env(name.c_str());
      model::PackedViT net(w);
      CAPTURE(name);
      CHECK(net.arch() == id);
      CHECK(bit_identical(packed_logits(net, images, nullptr), reference));
    }
  }

  TEST_CASE("PackedViT: matches the PyTorch (timm DeiT) reference logits") {
    const char* env = std::getenv("VITC_TEST_DATA_DIR");
    const std::filesystem::path dir = env != nullptr ? env : VITC_TEST_DATA_DIR;
    const auto reader =
        vitc::io::SafetensorsReader::open(dir / "reference" / "vit_small.safetensors");
    model::LoadOptions options;
    options.num_heads = {std::stoll(reader.metadata().at("num_heads"))};
    options.allow_unknown_tensors = true;
    const auto w = model::load_vit(reader, options);
    const auto input = reader.read<float, 4>("input");
    const auto ref = reader.read<float, 2>("logits");
    model::PackedViT net(w);
    Tensor<float, 2> logits({input.extent(0), w.config.num_classes});
    net.forward(input.cview(), logits.view());
    double max_diff = 0.0;
    for (Index i = 0; i < logits.size(); ++i)
      max_diff = std::max(max_diff, double(std::abs(logits.data()[i] - ref.data()[i])));
    MESSAGE("PackedViT: max |logits - torch| = " << max_diff);
    CHECK(max_diff <= 1e-4);
  }

  TEST_CASE("PackedViT: shape errors name the tensor") {
    const model::ViTConfig c = vitc::test::tiny_config();
    model::PackedViT net(vitc::test::nontrivial_weights<float>(c, 1));
    Tensor<float, 4> bad({1, c.in_channels, c.image_size + 1, c.image_size});
    Tensor<float, 2> logits({1, c.num_classes}), bad_logits({2, c.num_classes});
    CHECK_THROWS_WITH_AS(net.forward(bad.cview(), logits.view()), doctest::Contains("images"),
                         vitc::ShapeError);
    const auto images = vitc::test::random_images<float>(c, 1, 1);
    CHECK_THROWS_WITH_AS(net.forward(images.cview(), bad_logits.view()),
                         doctest::Contains("logits"), vitc::ShapeError);
    auto w = vitc::test::nontrivial_weights<float>(c, 1);
    w.blocks[1].fc1.bias = Tensor<float, 1>({7});
    CHECK_THROWS_AS(model::PackedViT{w}, vitc::ShapeError);
  }
}

}  // namespace packed_vit_test
