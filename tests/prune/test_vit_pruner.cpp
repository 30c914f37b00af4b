// SPDX-License-Identifier: Apache-2.0
// Physical pruning of a ViT: zero-importance units removed leave the logits unchanged; a pruned
// checkpoint reloads and runs.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "../model/vit_test_util.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/prune/pruner.hpp"
#include "vitcompress/prune/score_groups.hpp"
#include "vitcompress/prune/vit_graph.hpp"
#include "vitcompress/prune/vit_pruner.hpp"

using namespace vitc::prune;
using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;

namespace {

// D = 16, 4 heads of 4, MLP 16, 3 blocks, 8x8 images of 2 channels, patch 4.
model::ViTConfig config3() {
  auto c = model::ViTConfig::uniform(8, 4, 2, 16, 3, 4, 16, 5);
  return c;
}

template <class T>
void zero_head(model::ViTWeights<T>& w, std::size_t block, Index h) {
  const auto& b = w.config.blocks[block];
  auto& blk = w.blocks[block];
  const Index dqk = b.qk_head_dim, dv = b.v_head_dim, H = b.num_heads;
  for (Index j = 0; j < dqk; ++j)
    for (Index r : {h * dqk + j, H * dqk + h * dqk + j})
      for (Index c = 0; c < w.config.embed_dim; ++c) blk.qkv.weight(r, c) = T(0);
  for (Index j = 0; j < dv; ++j) {
    for (Index c = 0; c < w.config.embed_dim; ++c) {
      blk.qkv.weight(2 * H * dqk + h * dv + j, c) = T(0);
      blk.proj.weight(c, h * dv + j) = T(0);
    }
  }
}

template <class T>
void zero_qk_dim(model::ViTWeights<T>& w, std::size_t block, Index j) {
  const auto& b = w.config.blocks[block];
  for (Index h = 0; h < b.num_heads; ++h)
    for (Index r : {h * b.qk_head_dim + j, b.qk_dim() + h * b.qk_head_dim + j})
      for (Index c = 0; c < w.config.embed_dim; ++c) w.blocks[block].qkv.weight(r, c) = T(0);
}

template <class T>
void zero_v_dim(model::ViTWeights<T>& w, std::size_t block, Index j) {
  const auto& b = w.config.blocks[block];
  for (Index h = 0; h < b.num_heads; ++h)
    for (Index c = 0; c < w.config.embed_dim; ++c) {
      w.blocks[block].qkv.weight(2 * b.qk_dim() + h * b.v_head_dim + j, c) = T(0);
      w.blocks[block].proj.weight(c, h * b.v_head_dim + j) = T(0);
    }
}

template <class T>
void zero_neuron(model::ViTWeights<T>& w, std::size_t block, Index u) {
  for (Index c = 0; c < w.config.embed_dim; ++c) {
    w.blocks[block].fc1.weight(u, c) = T(0);
    w.blocks[block].fc2.weight(c, u) = T(0);
  }
}

template <class T>
Tensor<T, 2> logits(const model::ViTWeights<T>& w, const Tensor<T, 4>& images) {
  model::ViTWorkspace<T> ws;
  return model::vit_logits(w, images.cview(), ws);
}

template <class T>
double max_abs_diff(const Tensor<T, 2>& a, const Tensor<T, 2>& b) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i])));
  return m;
}

template <class T>
std::vector<std::vector<double>> l2_scores(const ViTGraph& g, const model::ViTWeights<T>& w) {
  const auto params = param_tensors(w);
  return score_groups<T>(g.graph, params, {},
                         ScoreSpec{Estimator::kL2, Reduction::kMean, Normalization::kNone});
}

}  // namespace

TEST_SUITE("prune") {
  TEST_CASE_TEMPLATE("removing zero-importance heads, head dims and MLP units keeps the logits", T,
                     double, float) {
    const auto c = config3();
    auto w = vitc::test::nontrivial_weights<T>(c, 7);
    zero_head(w, 0, 2);
    zero_head(w, 1, 0);
    zero_head(w, 1, 3);
    zero_qk_dim(w, 2, 1);
    zero_v_dim(w, 1, 3);
    zero_v_dim(w, 2, 0);
    for (Index u : {1, 5, 9}) zero_neuron(w, 0, u);
    zero_neuron(w, 2, 15);
    const auto images = vitc::test::random_images<T>(c, 3, 11);
    const auto before = logits(w, images);

    const ViTGraph g = vit_graph(c);
    const auto scores = l2_scores(g, w);  // biases are not scored and stay non-zero
    const auto plan = plan_zero_units(
        g.graph, scores,
        {GroupKind::kHeads, GroupKind::kQueryKeyDims, GroupKind::kValueDims, GroupKind::kHidden});
    const auto removed = [&](const char* name) {
      return plan.removed[static_cast<std::size_t>(g.graph.find_group(name))];
    };
    CHECK(removed("blocks.0.attn.heads") == std::vector<Index>{2});
    CHECK(removed("blocks.1.attn.heads") == std::vector<Index>{0, 3});
    CHECK(removed("blocks.2.attn.qk_dims") == std::vector<Index>{1});
    CHECK(removed("blocks.1.attn.v_dims") == std::vector<Index>{3});
    CHECK(removed("blocks.0.mlp.hidden") == std::vector<Index>{1, 5, 9});
    CHECK(removed("blocks.2.mlp.hidden") == std::vector<Index>{15});
    CHECK(plan.removed_units() == 10);

    const auto pruned = apply_pruning(w, g, plan);
    CHECK(pruned.config.blocks[0] == model::BlockConfig{3, 4, 4, 13});
    CHECK(pruned.config.blocks[1] == model::BlockConfig{2, 4, 3, 16});
    CHECK(pruned.config.blocks[2] == model::BlockConfig{4, 3, 3, 15});
    CHECK(pruned.size() == plan.parameters_after);
    CHECK(pruned.config.macs_per_image() == plan.macs_after);
    // Exact in double up to rounding; in float, 1e-6 relative to the largest logit (the rescaled
    // query rows of block 2 round differently).
    double scale = 1;
    for (Index i = 0; i < before.size(); ++i)
      scale = std::max(scale, std::abs(static_cast<double>(before.data()[i])));
    const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-6 * scale;
    CAPTURE(scale);
    CHECK(max_abs_diff(before, logits(pruned, images)) < tol);
  }

  TEST_CASE("the ranking pruner removes exactly the zero units at the matching ratio") {
    auto c = model::ViTConfig::uniform(8, 4, 2, 16, 2, 4, 16, 5);
    auto w = vitc::test::nontrivial_weights<double>(c, 3);
    zero_head(w, 0, 1);
    zero_head(w, 1, 2);
    for (Index u : {0, 3, 8, 12}) zero_neuron(w, 0, u);
    for (Index u : {2, 4, 6, 15}) zero_neuron(w, 1, u);
    const auto images = vitc::test::random_images<double>(c, 2, 5);
    const ViTGraph g = vit_graph(c);
    PruneOptions o;
    o.ratio = 0.25;  // 1 of 4 heads, 4 of 16 units per block
    o.ranking = Ranking::kUniform;
    const auto scores = score_groups<double>(g.graph, param_tensors(w), {}, ScoreSpec{});
    const auto plan = plan_pruning(g.graph, scores, o);
    const auto pruned = apply_pruning(w, g, plan);
    CHECK(pruned.config.blocks[0] == model::BlockConfig{3, 4, 4, 12});
    CHECK(max_abs_diff(logits(w, images), logits(pruned, images)) < 1e-12);
  }

  TEST_CASE("a zero-importance block is removed whole and the logits stay") {
    const auto c = config3();
    auto w = vitc::test::nontrivial_weights<double>(c, 9);
    w.blocks[1].qkv.weight.fill(0);
    w.blocks[1].proj.weight.fill(0);
    w.blocks[1].proj.bias.fill(0);
    w.blocks[1].fc1.weight.fill(0);
    w.blocks[1].fc2.weight.fill(0);
    w.blocks[1].fc2.bias.fill(0);
    w.blocks[1].norm1.weight.fill(0);
    w.blocks[1].norm2.weight.fill(0);
    w.blocks[1].norm1.bias.fill(0);
    w.blocks[1].norm2.bias.fill(0);
    w.blocks[1].qkv.bias.fill(0);
    w.blocks[1].fc1.bias.fill(0);
    const auto images = vitc::test::random_images<double>(c, 2, 1);
    const ViTGraph g = vit_graph(c);
    const auto scores = l2_scores(g, w);
    const auto plan = plan_zero_units(g.graph, scores, {GroupKind::kDepth});
    CHECK(plan.removed[static_cast<std::size_t>(g.graph.find_group("depth"))] ==
          std::vector<Index>{1});
    const auto pruned = apply_pruning(w, g, plan);
    REQUIRE(pruned.config.blocks.size() == 2);
    CHECK(max_abs_diff(logits(w, images), logits(pruned, images)) < 1e-12);
  }

  TEST_CASE("a pruned checkpoint reloads with its own sizes and runs") {
    const auto c = config3();
    const auto w = vitc::test::nontrivial_weights<float>(c, 21);
    const ViTGraph g = vit_graph(c);
    PruneOptions o;
    o.ratio = 0.4;
    o.kinds = {GroupKind::kHeads, GroupKind::kHidden, GroupKind::kResidual,
               GroupKind::kQueryKeyDims};
    o.ranking = Ranking::kIsomorphic;
    const auto plan = plan_pruning(g.graph, l2_scores(g, w), o);
    const auto pruned = apply_pruning(w, g, plan);
    CHECK(pruned.config.embed_dim < c.embed_dim);
    const auto path = std::filesystem::temp_directory_path() / "vitc_test_pruned.safetensors";
    model::save_vit(path, pruned);
    const auto back = model::load_vit<float>(path);
    std::filesystem::remove(path);
    CHECK(back.config == pruned.config);
    const auto images = vitc::test::random_images<float>(c, 2, 3);
    const auto a = logits(pruned, images), b = logits(back, images);
    CHECK(max_abs_diff(a, b) == 0.0);
    for (Index i = 0; i < a.size(); ++i) CHECK(std::isfinite(a.data()[i]));
    // Pruning the pruned model again works from its own graph.
    const ViTGraph g2 = vit_graph(back.config);
    o.ratio = 0.2;
    const auto again = apply_pruning(back, g2, plan_pruning(g2.graph, l2_scores(g2, back), o));
    CHECK(again.size() < back.size());
  }

  TEST_CASE("apply_pruning rejects weights of another config") {
    const auto c = config3();
    const auto w = vitc::test::nontrivial_weights<float>(c, 1);
    const ViTGraph other = vit_graph(model::ViTConfig::uniform(8, 4, 2, 16, 2, 4, 16, 5));
    PruningPlan plan;
    plan.removed.resize(other.graph.groups().size());
    CHECK_THROWS_AS((void)apply_pruning(w, other, plan), vitc::ArgumentError);
  }
}
