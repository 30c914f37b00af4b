// SPDX-License-Identifier: Apache-2.0
// quant/quant_config.hpp, quant/fake_quant_vit.hpp and quant/quantized_checkpoint.hpp: the
// simulated quantized ViT, its configurations, QAT gradients and checkpoints.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../model/vit_test_util.hpp"
#include "quant_test_util.hpp"
#include "vitcompress/model/train.hpp"
#include "vitcompress/model/trainable_vit.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace {

using namespace vitc;
using namespace vitc::quant;
using model::HookSite;

static_assert(model::Trainable<FakeQuantViT>);

// QuantConfig::from_json(json) throws E with `needle` in its message.
template <class E>
void refused(const char* json, const char* needle) {
  test::check_throws_containing<E>([&] { (void)QuantConfig::from_json(json); }, needle);
}

// 8x8 grey images, patch 4, D = 8, two uneven blocks, 3 classes.
model::ViTConfig small_config() {
  model::ViTConfig c;
  c.image_size = 8;
  c.patch_size = 4;
  c.in_channels = 1;
  c.embed_dim = 8;
  c.num_classes = 3;
  c.blocks = {model::BlockConfig{2, 3, 4, 10}, model::BlockConfig{3, 2, 3, 6}};
  return c;
}

struct Images {
  Tensor<std::uint8_t, 3> images;
  Tensor<std::uint8_t, 1> labels;
  [[nodiscard]] model::LabeledImages view() const { return {images.cview(), labels.cview()}; }
};

Images random_images(Index n, std::uint64_t seed) {
  Images d{Tensor<std::uint8_t, 3>({n, 8, 8}), Tensor<std::uint8_t, 1>({n})};
  std::mt19937_64 rng(seed);
  for (auto& v : d.images.span()) v = static_cast<std::uint8_t>(rng() % 256);
  // Learnable labels: the class is the brightest third of the image.
  for (Index i = 0; i < n; ++i) {
    int sums[3] = {0, 0, 0};
    for (Index y = 0; y < 8; ++y)
      for (Index x = 0; x < 8; ++x) sums[std::min<Index>(x * 3 / 8, 2)] += d.images(i, y, x);
    d.labels(i) = static_cast<std::uint8_t>(std::max_element(sums, sums + 3) - sums);
  }
  return d;
}

Tensor<float, 4> batch_of(const Images& d, Index n) {
  Tensor<float, 4> x({n, 1, 8, 8});
  std::vector<Index> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  model::make_image_batch(d.images.cview(), idx, {}, {}, nullptr, x.view());
  return x;
}

// Wraps FakeQuantHooks and checks, after it ran, that every quantized site holds values on its
// grid (fake quantization is idempotent), and records which sites it saw.
struct CheckingHooks {
  static constexpr bool kEnabled = true;
  FakeQuantHooks* inner;
  std::set<std::string> seen;
  int off_grid = 0;
  void forward(HookSite s, int b, const TensorView<float, 2>& x) {
    inner->forward(s, b, x);
    const ActivationPoint& p = inner->point(s, b);
    if (!p.spec.quantized()) return;
    seen.insert(p.name);
    Tensor<float, 2> again(x.shape());
    fake_quantize(TensorView<const float, 2>(x), p.params, again.view(), p.name);
    for (Index r = 0; r < x.extent(0); ++r)
      for (Index c = 0; c < x.extent(1); ++c) off_grid += again(r, c) != x(r, c);
  }
  void backward(HookSite s, int b, const TensorView<const float, 2>& x,
                const TensorView<float, 2>& g) {
    inner->backward(s, b, x, g);
  }
};

float max_abs_diff(const Tensor<float, 2>& a, const Tensor<float, 2>& b) {
  float m = 0;
  for (Index i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a.data()[i] - b.data()[i]));
  return m;
}

QuantConfig all_float_config() {
  QuantConfig c;  // every spec defaults to scheme none
  c.name = "float";
  return c;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("named configurations: valid, JSON round trip, table entries") {
    for (const std::string& name : QuantConfig::names()) {
      CAPTURE(name);
      const QuantConfig c = QuantConfig::named(name);
      CHECK_NOTHROW(c.validate());
      const QuantConfig back = QuantConfig::from_json(c.to_json());
      CHECK(back.name == name);
      CHECK(back.weights == c.weights);
      CHECK(back.activations == c.activations);
      CHECK(back.other_params == c.other_params);
    }
    const auto w4a8 = QuantConfig::named("w4a8");
    CHECK(w4a8.weight(WeightKind::kFc1, 3).scheme == SchemeSpec{SchemeKind::kSymmetric, 4});
    CHECK(w4a8.weight(WeightKind::kHead, -1).scheme.bits == 8);
    const auto w7a8 = QuantConfig::named("w7a8");  // every weight at 7 bits, head included
    for (WeightKind k :
         {WeightKind::kPatchEmbed, WeightKind::kQkv, WeightKind::kFc2, WeightKind::kHead})
      CHECK(w7a8.weight(k, 0).scheme == SchemeSpec{SchemeKind::kSymmetric, 7});
    for (HookSite s : {HookSite::kKey, HookSite::kValue})  // the B operands of attention too
      CHECK(w7a8.activation(s, 1).scheme == SchemeSpec{SchemeKind::kSymmetric, 7});
    CHECK(w7a8.activation(HookSite::kQuery, 1).scheme == SchemeSpec{SchemeKind::kAsymmetric, 8});
    CHECK(w4a8.activation(HookSite::kFc2Input, 0).scheme == SchemeSpec{SchemeKind::kAsymmetric, 8});
    CHECK(w4a8.activation(HookSite::kBlockInput, 0).ptf);
    CHECK(QuantConfig::named("w8a8-log2attn").activation(HookSite::kAttentionProbs, 2).scheme ==
          SchemeSpec{SchemeKind::kLog2, 4});
    CHECK(QuantConfig::named("w4a4").activation(HookSite::kQkvInput, 0).scheme.bits == 4);
    CHECK(QuantConfig::named("fp16").other_params == SchemeKind::kFp16);
    test::check_throws_containing<ArgumentError>([] { (void)QuantConfig::named("w3a3"); }, "w3a3");
  }

  TEST_CASE("custom configuration: per-layer overrides from partial JSON") {
    const auto c = QuantConfig::from_json(
        R"({"base": "w4a8", "name": "mixed",
            "overrides": {"blocks.0.mlp.fc1.weight": {"bits": 8, "observer": "minmax"},
                          "blocks.1.fc2_input": {"bits": 6, "observer": "percentile",
                                                 "percentile": 99.9}},
            "weights": {"proj": {"granularity": "group", "group_size": 4}}})");
    CHECK(c.name == "mixed");
    CHECK(c.weight(WeightKind::kFc1, 0).scheme.bits == 8);
    CHECK(c.weight(WeightKind::kFc1, 0).observer.kind == ObserverKind::kMinMax);
    CHECK(c.weight(WeightKind::kFc1, 1).scheme.bits == 4);
    CHECK(c.activation(HookSite::kFc2Input, 1).scheme.bits == 6);
    CHECK(c.activation(HookSite::kFc2Input, 1).observer.percentile == 99.9);
    CHECK(c.activation(HookSite::kFc2Input, 0).scheme.bits == 8);
    CHECK(c.weight(WeightKind::kProj, 0).granularity.kind == GranularityKind::kGroup);
    const auto back = QuantConfig::from_json(c.to_json());
    CHECK(back.overrides == c.overrides);
    // A partial override starts from the kind default as the same document's "weights" sets it,
    // whatever the key order.
    const auto ordered = QuantConfig::from_json(
        R"({"overrides": {"blocks.1.attn.qkv.weight": {"bits": 4}},
            "weights": {"qkv": {"observer": "percentile", "percentile": 99.5}}, "base": "w8a8"})");
    CHECK(ordered.weight(WeightKind::kQkv, 1).scheme.bits == 4);
    CHECK(ordered.weight(WeightKind::kQkv, 1).observer.kind == ObserverKind::kPercentile);
    CHECK(ordered.weight(WeightKind::kQkv, 1).observer.percentile == 99.5);
    CHECK(ordered.weight(WeightKind::kQkv, 0).scheme.bits == 8);
    refused<FormatError>(R"({"base": "w8a8", "format": "onnx"})", "format");
    refused<FormatError>(R"({"base": "w8a8", "extra": 1})", "extra");
    // Errors name the key or point.
    refused<FormatError>(R"({"base": "w8a8", "weights": {"qkv": {"bitz": 4}}})",
                         "weights.qkv.bitz");
    refused<ArgumentError>(R"({"base": "w8a8", "weights": {"fc2": {"bits": 9}}})", "weights.fc2");
    refused<FormatError>(R"({"overrides": {"blocks.0.mlp.fc9.weight": {}}})",
                         "blocks.0.mlp.fc9.weight");
    refused<ArgumentError>(R"({"base": "w8a8", "activations": {"query": {"ptf": true}}})",
                           "activations.query");
    // Integers the field's type cannot hold are refused, not wrapped into valid values.
    refused<FormatError>(R"({"base": "w8a8", "weights": {"fc2": {"bits": 4294967300}}})",
                         "weights.fc2.bits = 4294967300 is out of range");
    refused<FormatError>(
        R"({"base": "w4a8-g32", "weights": {"fc1": {"group_scale_bits": -4294967292}}})",
        "weights.fc1.group_scale_bits");
    refused<FormatError>(
        R"({"base": "w8a8", "activations": {"query": {"max_samples": 18446744073709551615}}})",
        "activations.query.max_samples");
    refused<FormatError>(R"({"base": "w8a8", "version": 4294967297})", "unsupported version");
    CHECK(QuantConfig::from_json(R"({"base": "w8a8", "version": 1})").weights ==
          QuantConfig::named("w8a8").weights);
    // A spec whose granularity or observer changes keeps no stale field of the old one, so it
    // reads back equal from its own JSON (fuzz_quant_config found the group size kept).
    const QuantConfig switched = QuantConfig::from_json(
        R"({"base": "w4a8-g32", "weights": {"qkv": {"granularity": "channel", "group_scale_bits": 0,
            "observer": "minmax"}}, "activations": {"query": {"observer": "percentile"}}})");
    const TensorQuantSpec& qkv = switched.weights[static_cast<std::size_t>(WeightKind::kQkv)];
    CHECK(qkv.granularity == GranularitySpec{GranularityKind::kChannel, 0, 0});
    CHECK(qkv.observer == ObserverSpec{});
    const QuantConfig switched_back = QuantConfig::from_json(switched.to_json());
    CHECK(switched_back.weights == switched.weights);
    CHECK(switched_back.activations == switched.activations);
    // An override that turns the kind's integer group scales off keeps them off when read back.
    const QuantConfig off = QuantConfig::from_json(
        R"({"base": "w4a8-g32", "overrides": {"blocks.0.mlp.fc1.weight": {"group_scale_bits": 0}}})");
    CHECK(off.weight(WeightKind::kFc1, 0).group_scale_bits == 0);
    CHECK(QuantConfig::from_json(off.to_json()).overrides == off.overrides);
    // The same rules for an override of one point, and no power-of-two factor on a weight.
    refused<ArgumentError>(R"({"base": "w8a8", "overrides": {"blocks.1.query": {"ptf": true}}})",
                           "overrides.blocks.1.query");
    CHECK(QuantConfig::from_json(
              R"({"base": "w8a8", "overrides": {"blocks.1.block_input": {"ptf": true}}})")
              .activation(HookSite::kBlockInput, 1)
              .ptf);
    refused<ArgumentError>(R"({"base": "w8a8", "weights": {"fc1": {"scheme": "asymmetric",
                  "granularity": "tensor", "ptf": true}}})",
                           "weights.fc1");
    refused<ArgumentError>(R"({"base": "w8a8", "overrides": {"head.weight": {"scheme": "asymmetric",
                  "granularity": "tensor", "ptf": true}}})",
                           "overrides.head.weight");
    // An override for a block the model does not have.
    const auto cfg = QuantConfig::from_json(
        R"({"base": "w8a8", "overrides": {"blocks.7.attn.qkv.weight": {"bits": 4}}})");
    test::check_throws_containing<ArgumentError>(
        [&] { FakeQuantViT m(test::nontrivial_weights<float>(small_config(), 1), cfg); },
        "blocks.7.attn.qkv.weight");
  }

  TEST_CASE("all-float configuration reproduces the float model, its gradients exactly") {
    const auto w = test::nontrivial_weights<float>(small_config(), 3);
    const Images d = random_images(6, 1);
    const auto x = batch_of(d, 6);
    model::ViTWeights<float> w_copy = w;
    model::TrainableViT<> ref(w_copy);
    FakeQuantViT fq(w, all_float_config());
    Tensor<float, 2> a({6, 3}), b({6, 3});
    ref.predict(x.cview(), a.view());
    fq.predict(x.cview(), b.view());
    // Inference differs in rounding only: the unhooked forward runs the last block on the class
    // tokens alone (a GEMM of other shape), the hooked one on every token.
    CHECK(max_abs_diff(a, b) <= 1e-5f);
    Tensor<std::int32_t, 1> labels({6});
    for (Index i = 0; i < 6; ++i) labels(i) = d.labels(i);
    const auto s1 = ref.compute_gradients(x.cview(), labels.cview(), 0.1);
    const auto s2 = fq.compute_gradients(x.cview(), labels.cview(), 0.1);
    CHECK(s1.loss_sum == s2.loss_sum);
    const auto g1 = ref.parameter_slots();
    const auto g2 = fq.parameter_slots();
    REQUIRE(g1.size() == g2.size());
    for (std::size_t i = 0; i < g1.size(); ++i) {
      CHECK(g1[i].name == g2[i].name);
      CHECK(g1[i].decay == g2[i].decay);
      for (std::size_t j = 0; j < g1[i].grad.size(); ++j) REQUIRE(g1[i].grad[j] == g2[i].grad[j]);
    }
  }

  TEST_CASE("PTQ: every point quantized on its grid, weights within their levels") {
    const auto w = test::nontrivial_weights<float>(small_config(), 5);
    const Images calib = random_images(40, 2), test_set = random_images(8, 3);
    const auto x = batch_of(test_set, 8);
    model::ViTWeights<float> w_copy = w;
    model::TrainableViT<> ref(w_copy);
    Tensor<float, 2> ref_logits({8, 3});
    ref.predict(x.cview(), ref_logits.view());
    for (const std::string& name : QuantConfig::names()) {
      CAPTURE(name);
      FakeQuantViT fq(w, QuantConfig::named(name));
      Tensor<float, 2> logits({8, 3});
      if (name != "fp16")  // fp16 has nothing to calibrate
        test::check_throws_containing<ArgumentError>([&] { fq.predict(x.cview(), logits.view()); },
                                                     "not calibrated");
      fq.calibrate(calib.view(), 40, {}, 16);
      // Every weight point: at most 2^bits − 1 levels per channel; other parameters untouched.
      const auto& sim = fq.simulated_weights();
      for (const WeightPoint& wp : fq.weight_points()) {
        const auto v = FakeQuantViT::weight_view(sim, wp.kind, wp.block);
        for (Index r = 0; r < v.extent(0); ++r) {
          std::set<float> levels;
          for (Index c = 0; c < v.extent(1); ++c) levels.insert(v(r, c));
          if (wp.spec.scheme.kind == SchemeKind::kSymmetric)
            CHECK(static_cast<Index>(levels.size()) <= (Index{1} << wp.spec.scheme.bits) - 1);
        }
      }
      if (name != "fp16")
        CHECK(sim.blocks[1].fc1.bias.data()[3] == w.blocks[1].fc1.bias.data()[3]);
      else
        CHECK(sim.norm.weight.data()[0] ==
              half_bits_to_float(float_to_half_bits(w.norm.weight.data()[0])));
      // Every activation point is visited and its values lie on its grid.
      CheckingHooks check{&fq.hooks(), {}, 0};
      model::ViTWorkspace<float> ws;
      model::vit_forward(sim, x.cview(), logits.view(), ws, nullptr, model::Pass::kInference,
                         check);
      CHECK(check.off_grid == 0);
      CHECK(check.seen.size() == fq.hooks().points().size());
      // predict() computes the same thing, and stays near the float model.
      Tensor<float, 2> logits2({8, 3});
      fq.predict(x.cview(), logits2.view());
      CHECK(max_abs_diff(logits, logits2) == 0.0f);
      const float tol = name == "fp16" ? 0.02f : (name == "w4a4" ? 1.5f : 0.6f);
      CHECK(max_abs_diff(logits, ref_logits) < tol);
      if (name == "w8a8") CHECK(max_abs_diff(logits, ref_logits) > 0.0f);  // it did quantize
    }
  }

  TEST_CASE("PTQ errors: NaN weights name the tensor; bad calibration counts") {
    auto w = test::nontrivial_weights<float>(small_config(), 7);
    w.blocks[1].proj.weight(2, 1) = std::numeric_limits<float>::quiet_NaN();
    FakeQuantViT fq(w, QuantConfig::named("w8a8"));
    test::check_throws_containing<ArgumentError>([&] { fq.quantize_weights(); },
                                                 "blocks.1.attn.proj.weight");
    // A NaN that reaches the activations is reported at the first calibrated point it reaches.
    auto w2 = test::nontrivial_weights<float>(small_config(), 7);
    w2.blocks[0].norm1.weight(3) = std::numeric_limits<float>::infinity();
    FakeQuantViT inf_model(w2, QuantConfig::named("w8a8"));
    const Images some = random_images(4, 1);
    test::check_throws_containing<ArgumentError>([&] { inf_model.calibrate(some.view(), 4); },
                                                 "blocks.0.qkv_input");
    FakeQuantViT ok(test::nontrivial_weights<float>(small_config(), 7), QuantConfig::named("w8a8"));
    const Images calib = random_images(10, 1);
    CHECK_THROWS_AS(ok.calibrate(calib.view(), 11), ArgumentError);
    CHECK_THROWS_AS(ok.calibrate(calib.view(), 0), ArgumentError);
  }

  TEST_CASE("straight-through estimator: clipped activations and weights get zero gradient") {
    // Hooks alone: a per-tensor asymmetric 4-bit point with a known range.
    QuantConfig c;
    c.activations[static_cast<std::size_t>(HookSite::kFc2Input)].scheme = {SchemeKind::kAsymmetric,
                                                                           4};
    FakeQuantHooks hooks(c, 1);
    ActivationPoint& p = hooks.point(HookSite::kFc2Input, 0);
    p.params = params_from_ranges(p.spec.quant_spec(), std::vector<Range>{{-1.0f, 1.0f}}, "p");
    p.ready = true;
    auto x = test::uniform_tensor(5, 7, -2.0f, 2.0f, 4);
    const Tensor<float, 2> x0 = x;
    hooks.set_record_masks(true);
    hooks.forward(HookSite::kFc2Input, 0, x.view());
    Tensor<float, 2> g({5, 7}, 1.0f);
    hooks.backward(HookSite::kFc2Input, 0, x.cview(), g.view());
    const Range clip = clip_range(p.params.group(0), p.params.scheme);
    int zeros = 0;
    for (Index r = 0; r < 5; ++r)
      for (Index k = 0; k < 7; ++k) {
        const bool inside = x0(r, k) >= clip.lo && x0(r, k) <= clip.hi;
        CHECK(g(r, k) == (inside ? 1.0f : 0.0f));
        zeros += !inside;
      }
    CHECK(zeros > 0);
    // Without recording, backward is the identity.
    hooks.set_record_masks(false);
    hooks.forward(HookSite::kFc2Input, 0, x.view());
    Tensor<float, 2> g2({5, 7}, 1.0f);
    hooks.backward(HookSite::kFc2Input, 0, x.cview(), g2.view());
    for (float v : g2.span()) CHECK(v == 1.0f);

    // Weights: push one master weight beyond its clip range; its gradient becomes 0.
    FakeQuantViT fq(test::nontrivial_weights<float>(small_config(), 9), QuantConfig::named("w4a8"));
    const Images d = random_images(16, 5);
    fq.calibrate(d.view(), 16);
    const WeightPoint* fc1 = nullptr;
    for (const WeightPoint& wp : fq.weight_points())
      if (wp.name == "blocks.0.mlp.fc1.weight") fc1 = &wp;
    REQUIRE(fc1 != nullptr);
    const float hi = clip_range(fc1->params.group(4), fc1->params.scheme).hi;
    fq.master_weights().blocks[0].fc1.weight(4, 2) = hi * 1.5f;
    const auto x8 = batch_of(d, 8);
    Tensor<std::int32_t, 1> labels({8});
    for (Index i = 0; i < 8; ++i) labels(i) = d.labels(i);
    (void)fq.compute_gradients(x8.cview(), labels.cview(), 0.0);
    const auto slots = fq.parameter_slots();
    for (const auto& s : slots)
      if (s.name == "blocks.0.mlp.fc1.weight") {
        const Index cols = fc1->cols;
        CHECK(s.grad[static_cast<std::size_t>(4 * cols + 2)] == 0.0f);
        int nonzero = 0;
        for (float v : s.grad) nonzero += v != 0.0f;
        CHECK(nonzero > 0);
      }
  }

  TEST_CASE("QAT: the training forward computes what predict() computes") {
    const Images d = random_images(24, 17);
    for (const std::string& name : {std::string("w8a8"), std::string("w4a4")}) {
      CAPTURE(name);
      FakeQuantViT fq(test::nontrivial_weights<float>(small_config(), 19),
                      QuantConfig::named(name));
      fq.calibrate(d.view(), 24);
      const auto x = batch_of(d, 12);
      Tensor<std::int32_t, 1> labels({12});
      for (Index i = 0; i < 12; ++i) labels(i) = d.labels(i);
      Tensor<float, 2> logits({12, 3});
      fq.predict(x.cview(), logits.view());
      const auto eval = model::softmax_cross_entropy(logits.cview(), labels.cview(), 0.0);
      const auto train = fq.compute_gradients(x.cview(), labels.cview(), 0.0);
      CHECK(train.loss_sum == doctest::Approx(eval.loss_sum).epsilon(1e-5));
      CHECK(train.correct == eval.correct);
    }
  }

  TEST_CASE("learned scales: LSQ gradient of an activation point") {
    QuantConfig c;
    c.activations[static_cast<std::size_t>(HookSite::kProjInput)].scheme = {SchemeKind::kAsymmetric,
                                                                            3};
    FakeQuantHooks hooks(c, 1);
    ActivationPoint& p = hooks.point(HookSite::kProjInput, 0);
    p.params = params_from_ranges(p.spec.quant_spec(), std::vector<Range>{{-0.5f, 1.0f}}, "p");
    p.ready = true;
    hooks.enable_learned_scales();
    REQUIRE(p.learns_scale());
    p.log_scale[0] = 0.1f;
    hooks.apply_learned_scales();
    const float s = p.params.scales[0];
    CHECK(s == doctest::Approx(p.base_scales[0] * std::exp(0.1)).epsilon(1e-6));
    const std::int32_t z = p.params.zero_points[0];
    auto x = test::uniform_tensor(6, 9, -1.5f, 2.0f, 8);
    const Tensor<float, 2> x0 = x;
    const auto g = test::uniform_tensor(6, 9, -1.0f, 1.0f, 9);
    hooks.zero_scale_gradients();
    hooks.set_record_masks(true);
    hooks.forward(HookSite::kProjInput, 0, x.view());
    Tensor<float, 2> grad = g;
    hooks.backward(HookSite::kProjInput, 0, x.cview(), grad.view());
    // Independent evaluation: x̂ = s·(clamp(round(x/s) + z, 0, 7) − z); d x̂/d log s = s·d x̂/d s.
    double expected = 0;
    for (Index i = 0; i < x0.size(); ++i) {
      const double v = x0.data()[i] / static_cast<double>(s);
      const double q = std::nearbyint(v) + z;
      const double d = q < 0 ? -z : (q > 7 ? 7 - z : std::nearbyint(v) - v);
      expected += g.data()[i] * s * d;
    }
    CHECK(p.log_scale_grad[0] == doctest::Approx(expected).epsilon(1e-4));
    CHECK(expected != 0.0);
  }

  TEST_CASE("learned scales: QAT trains them, and the checkpoint keeps them") {
    const Images d = random_images(64, 41);
    FakeQuantViT fq(test::nontrivial_weights<float>(small_config(), 43),
                    QuantConfig::named("w4a4"));
    fq.calibrate(d.view(), 32);
    fq.enable_learned_scales();
    const auto slots = fq.parameter_slots();
    int scale_slots = 0;
    for (const auto& sl : slots) scale_slots += sl.name.ends_with(".log_scale");
    CHECK(scale_slots > 10);
    const float before = fq.weight_points()[1].params.scales[0];
    const float act_before = fq.hooks().point(HookSite::kFc2Input, 1).params.scales[0];
    model::TrainConfig tc;
    tc.epochs = 3;
    tc.batch_size = 16;
    tc.lr = 3e-3;
    tc.warmup_epochs = 0;
    (void)model::train(fq, d.view(), nullptr, tc);
    const auto x = batch_of(d, 6);
    Tensor<float, 2> la({6, 3}), lb({6, 3});
    // Saved straight after the last optimizer step (the scales are brought up to date on save).
    const auto path = std::filesystem::temp_directory_path() / "vitc_test_quant_lsq.safetensors";
    save_quantized(path, fq);
    fq.predict(x.cview(), la.view());
    CHECK(fq.weight_points()[1].params.scales[0] != before);
    CHECK(fq.hooks().point(HookSite::kFc2Input, 1).params.scales[0] != act_before);
    FakeQuantViT back = load_quantized(path);
    back.predict(x.cview(), lb.view());
    CHECK(max_abs_diff(la, lb) == 0.0f);
    std::filesystem::remove(path);
  }

  TEST_CASE("QAT through the trainer lowers the training loss of a 4-bit model") {
    const Images d = random_images(96, 11);
    FakeQuantViT fq(test::nontrivial_weights<float>(small_config(), 13),
                    QuantConfig::named("w4a4"));
    fq.calibrate(d.view(), 32);
    const auto x = batch_of(d, 96);
    Tensor<std::int32_t, 1> labels({96});
    for (Index i = 0; i < 96; ++i) labels(i) = d.labels(i);
    const auto before = fq.compute_gradients(x.cview(), labels.cview(), 0.0);
    model::TrainConfig tc;
    tc.epochs = 8;
    tc.batch_size = 16;
    tc.lr = 3e-3;
    tc.warmup_epochs = 0;
    tc.label_smoothing = 0;
    tc.seed = 1;
    (void)model::train(fq, d.view(), nullptr, tc);
    const auto after = fq.compute_gradients(x.cview(), labels.cview(), 0.0);
    CHECK(after.loss_sum < 0.9 * before.loss_sum);
  }

  TEST_CASE("quantized checkpoint: save, load, identical weights and logits") {
    const auto dir = std::filesystem::temp_directory_path() / "vitc_test_quant_ckpt";
    std::filesystem::create_directories(dir);
    const Images calib = random_images(24, 21), test_set = random_images(5, 22);
    const auto x = batch_of(test_set, 5);
    std::vector<QuantConfig> configs;
    for (const std::string& n : QuantConfig::names()) configs.push_back(QuantConfig::named(n));
    // Every storage and granularity: per-group int4, asymmetric uint8, log2 int8, per-tensor.
    configs.push_back(QuantConfig::from_json(R"({"base": "w4a8", "name": "storage-mix",
        "weights": {"qkv": {"granularity": "group", "group_size": 4},
                    "proj": {"scheme": "asymmetric", "bits": 6, "granularity": "tensor"},
                    "fc1": {"scheme": "log2", "bits": 5, "observer": "minmax"},
                    "fc2": {"scheme": "symmetric", "bits": 3, "granularity": "group",
                            "group_size": 2}},
        "activations": {"fc2_input": {"observer": "percentile"},
                        "qkv_input": {"observer": "ema"}}})"));
    for (const QuantConfig& cfg : configs) {
      CAPTURE(cfg.name);
      FakeQuantViT fq(test::nontrivial_weights<float>(small_config(), 31), cfg);
      fq.calibrate(calib.view(), 24, {}, 8);
      const auto path = dir / (cfg.name + ".safetensors");
      save_quantized(path, fq, {{"vitc.quant.calibration", "{\"images\": 24}"}});
      const auto reader = io::SafetensorsReader::open(path);
      CHECK(is_quantized_checkpoint(reader));
      FakeQuantViT back = load_quantized(reader);
      CHECK(back.config().name == cfg.name);
      const auto a = fq.simulated_weights().parameters();
      const auto b = back.simulated_weights().parameters();
      REQUIRE(a.size() == b.size());
      for (std::size_t i = 0; i < a.size(); ++i) {
        CAPTURE(a[i].name);
        for (std::size_t j = 0; j < a[i].values.size(); ++j)
          REQUIRE(a[i].values[j] == b[i].values[j]);
      }
      Tensor<float, 2> la({5, 3}), lb({5, 3});
      fq.predict(x.cview(), la.view());
      back.predict(x.cview(), lb.view());
      CHECK(max_abs_diff(la, lb) == 0.0f);
      // What an integer engine does with a loaded model: quantizing the loaded master weights with
      // the loaded parameters gives back exactly the codes of the saved model.
      REQUIRE(back.weight_points().size() == fq.weight_points().size());
      for (std::size_t i = 0; i < fq.weight_points().size(); ++i) {
        const WeightPoint& wa = fq.weight_points()[i];
        const WeightPoint& wb = back.weight_points()[i];
        CAPTURE(wa.name);
        REQUIRE(wa.name == wb.name);
        if (!wa.spec.needs_calibration()) continue;
        CHECK(wa.params.scales == wb.params.scales);
        CHECK(wa.params.zero_points == wb.params.zero_points);
        const auto ca = quantize<std::int16_t>(
            FakeQuantViT::weight_view(std::as_const(fq).master_weights(), wa.kind, wa.block),
            wa.params, wa.name);
        const auto cb = quantize<std::int16_t>(
            FakeQuantViT::weight_view(std::as_const(back).master_weights(), wb.kind, wb.block),
            wb.params, wb.name);
        for (Index j = 0; j < ca.size(); ++j) REQUIRE(ca.data()[j] == cb.data()[j]);
        if (std::string(weight_storage(wa.spec)) == "int4") {
          const auto stored = reader.read<std::uint8_t, 2>(wa.name + ".qweight");
          const auto codes = kernels::unpack_int4(stored.cview(), wa.cols, wa.name);
          for (Index j = 0; j < ca.size(); ++j) REQUIRE(codes.data()[j] == ca.data()[j]);
        }
      }
      for (const ActivationPoint& pa : fq.hooks().points()) {
        CAPTURE(pa.name);
        const ActivationPoint& pb = back.hooks().point(pa.site, pa.block);
        CHECK(pa.params.scales == pb.params.scales);
        CHECK(pa.params.zero_points == pb.params.zero_points);
        CHECK(pa.ptf.has_value() == pb.ptf.has_value());
        if (pa.ptf && pb.ptf) CHECK(pa.ptf->alpha == pb.ptf->alpha);
      }
      if (cfg.name == "w4a8") {
        const auto& t = reader.info("blocks.0.mlp.fc1.weight.qweight");
        CHECK(t.dtype == io::DType::kU8);
        CHECK(t.shape == std::vector<Index>{10, 4});  // [hidden, ceil(8 / 2)]
        CHECK(reader.info("blocks.0.mlp.fc1.weight.scale").shape == std::vector<Index>{10});
        CHECK(reader.contains("quant.blocks.1.block_input.ptf_alpha"));
        CHECK(!reader.contains("blocks.0.mlp.fc1.weight"));
        CHECK(reader.metadata().at("vitc.quant.calibration") == "{\"images\": 24}");
      }
      if (cfg.name == "fp16")
        CHECK(reader.info("blocks.0.mlp.fc1.weight").dtype == io::DType::kF16);
    }

    // Corrupted and incomplete files are refused with the tensor named.
    FakeQuantViT fq(test::nontrivial_weights<float>(small_config(), 31),
                    QuantConfig::named("w8a8"));
    fq.calibrate(calib.view(), 24);
    auto writer = quantized_writer(fq);
    {
      auto extra = writer;
      extra.add("stray", Tensor<float, 1>({2}));
      const auto r = io::SafetensorsReader::from_bytes(extra.serialize());
      test::check_throws_containing<FormatError>([&] { (void)load_quantized(r); }, "stray");
    }
    {
      const auto bytes = writer.serialize();
      const auto r0 = io::SafetensorsReader::from_bytes(bytes);
      // Rebuild without one scale.
      io::SafetensorsWriter partial;
      for (const auto& [k, v] : r0.metadata()) partial.set_metadata(k, v);
      for (const auto& t : r0.tensors())
        if (t.name != "quant.blocks.0.query.scale")
          partial.add_raw(t.name, t.dtype, t.shape, t.bytes);
      const auto r = io::SafetensorsReader::from_bytes(partial.serialize());
      test::check_throws_containing<FormatError>([&] { (void)load_quantized(r); },
                                                 "quant.blocks.0.query.scale");
      // A symmetric int8 code of −128 is outside the restricted range.
      io::SafetensorsWriter bad;
      for (const auto& [k, v] : r0.metadata()) bad.set_metadata(k, v);
      for (const auto& t : r0.tensors()) {
        std::vector<std::byte> b(t.bytes.begin(), t.bytes.end());
        if (t.name == "blocks.1.mlp.fc2.weight.qweight") b[3] = std::byte{0x80};
        bad.add_raw(t.name, t.dtype, t.shape, b);
      }
      const auto rb = io::SafetensorsReader::from_bytes(bad.serialize());
      test::check_throws_containing<ArgumentError>([&] { (void)load_quantized(rb); },
                                                   "blocks.1.mlp.fc2.weight.qweight");
    }
    std::filesystem::remove_all(dir);
  }
}
