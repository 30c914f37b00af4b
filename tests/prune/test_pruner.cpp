// SPDX-License-Identifier: Apache-2.0
// Ranking, ratios, rounding, protection and errors of the planner, on a ViT graph with chosen
// scores.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "vitcompress/prune/pruner.hpp"
#include "vitcompress/prune/vit_graph.hpp"

using namespace vitc::prune;
using vitc::Index;

namespace {

// D = 8, depth 3, 2 heads of 4, MLP 12.
ViTGraph graph3() { return vit_graph(vitc::model::ViTConfig::uniform(8, 4, 1, 8, 3, 2, 12, 3)); }

// Scores: unit u of group g gets base[g] + u (so the lowest units are the first ones), unless
// overridden.
std::vector<std::vector<double>> ramp_scores(const DependencyGraph& g, double step = 1.0) {
  std::vector<std::vector<double>> s;
  for (std::size_t i = 0; i < g.groups().size(); ++i) {
    std::vector<double> v;
    for (Index u = 0; u < g.groups()[i].units; ++u)
      v.push_back(1.0 + step * static_cast<double>(u));
    s.push_back(v);
  }
  return s;
}

Index removed_in(const PruningPlan& p, const DependencyGraph& g, const std::string& name) {
  return static_cast<Index>(p.removed[static_cast<std::size_t>(g.find_group(name))].size());
}

}  // namespace

TEST_SUITE("prune") {
  TEST_CASE("uniform ranking removes the lowest units of each group") {
    const ViTGraph vg = graph3();
    const auto& g = vg.graph;
    auto scores = ramp_scores(g);
    // Make units 5, 7, 11 the weakest of block 1's MLP.
    auto& mlp1 = scores[static_cast<std::size_t>(g.find_group("blocks.1.mlp.hidden"))];
    mlp1[5] = 0.1;
    mlp1[7] = 0.2;
    mlp1[11] = 0.3;
    PruneOptions o;
    o.ratio = 0.25;  // 3 of 12 MLP units, round(0.5) = 1 of 2 heads
    const PruningPlan p = plan_pruning(g, scores, o);
    CHECK(p.removed[static_cast<std::size_t>(g.find_group("blocks.1.mlp.hidden"))] ==
          std::vector<Index>{5, 7, 11});
    CHECK(p.removed[static_cast<std::size_t>(g.find_group("blocks.0.mlp.hidden"))] ==
          std::vector<Index>{0, 1, 2});
    CHECK(removed_in(p, g, "blocks.2.attn.heads") == 1);
    CHECK(removed_in(p, g, "embed") == 0);  // not enabled
    CHECK(removed_in(p, g, "depth") == 0);
    const auto pc = pruned_config(vg, p.shrink(g));
    CHECK(p.parameters_after == pc.parameter_count());
    CHECK(p.macs_after == pc.macs_per_image());
    CHECK(p.parameters_before == vg.config.parameter_count());
  }

  TEST_CASE("ratios outside the interval 0 to 1, or leaving a group empty, are ArgumentErrors") {
    const ViTGraph vg = graph3();
    const auto scores = ramp_scores(vg.graph);
    for (double r : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
      PruneOptions o;
      o.ratio = r;
      CAPTURE(r);
      CHECK_THROWS_AS(plan_pruning(vg.graph, scores, o), vitc::ArgumentError);
    }
    PruneOptions o;
    o.ratio = 0.75;  // round(1.5) = 2 of 2 heads
    CHECK_THROWS_WITH_AS(plan_pruning(vg.graph, scores, o),
                         doctest::Contains("would leave group 'blocks.0.attn.heads' with no unit"),
                         vitc::ArgumentError);
    o.ratio = 0.0;
    CHECK(plan_pruning(vg.graph, scores, o).removed_units() == 0);
    o.round_to = 0;
    CHECK_THROWS_AS(plan_pruning(vg.graph, scores, o), vitc::ArgumentError);
    // Missing or mis-sized scores.
    auto bad = scores;
    bad[static_cast<std::size_t>(vg.graph.find_group("blocks.0.mlp.hidden"))].clear();
    o.round_to = 1;
    o.ratio = 0.1;
    CHECK_THROWS_AS(plan_pruning(vg.graph, bad, o), vitc::ArgumentError);
    bad[static_cast<std::size_t>(vg.graph.find_group("blocks.0.mlp.hidden"))] = {1, 2};
    CHECK_THROWS_AS(plan_pruning(vg.graph, bad, o), vitc::ShapeError);
  }

  TEST_CASE("kept channels round to the nearest multiple, heads do not") {
    const ViTGraph vg = graph3();
    const auto scores = ramp_scores(vg.graph);
    PruneOptions o;
    o.kinds = {GroupKind::kHidden};
    o.round_to = 4;
    o.ratio = 0.25;  // 3 of 12 -> keeps 9 -> 8
    CHECK(removed_in(plan_pruning(vg.graph, scores, o), vg.graph, "blocks.0.mlp.hidden") == 4);
    o.ratio = 0.1;  // 1 of 12 -> keeps 11 -> 12: nothing removed
    CHECK(removed_in(plan_pruning(vg.graph, scores, o), vg.graph, "blocks.0.mlp.hidden") == 0);
    o.ratio = 0.8;  // 10 of 12 -> keeps 2 -> 4
    CHECK(removed_in(plan_pruning(vg.graph, scores, o), vg.graph, "blocks.0.mlp.hidden") == 8);
    o.ratio = 0.9;  // 11 of 12 -> keeps 1 -> 0: empty
    CHECK_THROWS_AS(plan_pruning(vg.graph, scores, o), vitc::ArgumentError);
  }

  TEST_CASE("global ranking follows the scores across layers; isomorphic ranks within classes") {
    const ViTGraph vg = graph3();
    const auto& g = vg.graph;
    auto scores = ramp_scores(g, 0.01);
    // Block 0's MLP is much less important than the others.
    for (double& s : scores[static_cast<std::size_t>(g.find_group("blocks.0.mlp.hidden"))])
      s *= 0.01;
    PruneOptions o;
    o.kinds = {GroupKind::kHidden};
    o.ranking = Ranking::kGlobal;
    o.ratio = 0.25;  // 9 of 36 units, all from block 0
    const auto p = plan_pruning(g, scores, o);
    CHECK(removed_in(p, g, "blocks.0.mlp.hidden") == 9);
    CHECK(removed_in(p, g, "blocks.1.mlp.hidden") == 0);
    o.ratio = 0.4;  // 14 of 36: block 0 would lose all 12
    CHECK_THROWS_WITH_AS(plan_pruning(g, scores, o),
                         doctest::Contains("every unit of group 'blocks.0.mlp.hidden'"),
                         vitc::ArgumentError);
    // Isomorphic: the three MLPs form one class, heads another; same picks as global here, and
    // the heads lose 0.25 * 6 = round(1.5) = 2 heads across the class.
    o.kinds = {GroupKind::kHidden, GroupKind::kHeads};
    o.ranking = Ranking::kIsomorphic;
    o.ratio = 0.25;
    const auto q = plan_pruning(g, scores, o);
    CHECK(removed_in(q, g, "blocks.0.mlp.hidden") == 9);
    CHECK(removed_in(q, g, "blocks.0.attn.heads") + removed_in(q, g, "blocks.1.attn.heads") +
              removed_in(q, g, "blocks.2.attn.heads") ==
          2);
  }

  TEST_CASE("ratios counted in parameters and MACs") {
    const ViTGraph vg = graph3();
    const auto& g = vg.graph;
    const auto scores = ramp_scores(g);
    for (auto ranking : {Ranking::kUniform, Ranking::kIsomorphic, Ranking::kGlobal})
      for (auto unit : {RatioUnit::kParameters, RatioUnit::kMacs}) {
        PruneOptions o;
        o.kinds = {GroupKind::kHidden, GroupKind::kResidual};
        o.ranking = ranking;
        o.unit = unit;
        o.ratio = 0.3;
        CAPTURE(to_string(ranking));
        CAPTURE(to_string(unit));
        const auto p = plan_pruning(g, scores, o);
        const double before = unit == RatioUnit::kMacs ? p.macs_before : p.parameters_before;
        const double after = unit == RatioUnit::kMacs ? p.macs_after : p.parameters_after;
        CHECK(after <= 0.7 * before);
        CHECK(after > 0.55 * before);  // not far beyond the target
        const auto pc = pruned_config(vg, p.shrink(g));
        CHECK(p.parameters_after == pc.parameter_count());
        CHECK(p.macs_after == pc.macs_per_image());
      }
    PruneOptions o;
    o.kinds = {GroupKind::kHeads};
    o.unit = RatioUnit::kParameters;
    o.ratio = 0.9;
    CHECK_THROWS_WITH_AS(plan_pruning(g, scores, o), doctest::Contains("cannot remove"),
                         vitc::ArgumentError);
  }

  TEST_CASE("protected names keep their groups and blocks") {
    const ViTGraph vg = graph3();
    const auto& g = vg.graph;
    const auto scores = ramp_scores(g);
    PruneOptions o;
    o.kinds = {GroupKind::kHidden, GroupKind::kResidual, GroupKind::kDepth};
    o.ratio = 0.34;
    o.protect = {"blocks.1.mlp.fc1"};
    auto p = plan_pruning(g, scores, o);
    CHECK(removed_in(p, g, "blocks.1.mlp.hidden") == 0);
    CHECK(removed_in(p, g, "blocks.2.mlp.hidden") == 4);
    CHECK(removed_in(p, g, "embed") == 3);
    CHECK(p.removed[static_cast<std::size_t>(g.find_group("depth"))] == std::vector<Index>{0});
    // A whole block: its unit, and every group that would remove output channels inside it (its
    // MLP, and the embedding, which owns its LayerNorm gains and proj/fc2 rows).
    o.protect = {"blocks.0"};
    p = plan_pruning(g, scores, o);
    CHECK(removed_in(p, g, "blocks.0.mlp.hidden") == 0);
    CHECK(removed_in(p, g, "blocks.1.mlp.hidden") == 4);
    CHECK(removed_in(p, g, "embed") == 0);
    CHECK(p.removed[static_cast<std::size_t>(g.find_group("depth"))] == std::vector<Index>{1});
    o.protect = {"blocks.2.mlp.fc2"};  // the embedding writes fc2's output rows
    p = plan_pruning(g, scores, o);
    CHECK(removed_in(p, g, "embed") == 0);
    CHECK(removed_in(p, g, "blocks.2.mlp.hidden") == 4);
    o.protect = {"head"};  // the embedding only removes the head's input columns
    p = plan_pruning(g, scores, o);
    CHECK(removed_in(p, g, "embed") == 3);
    o.protect = {"blocks.1.mlp.hidden"};  // a group by its own name
    p = plan_pruning(g, scores, o);
    CHECK(removed_in(p, g, "blocks.1.mlp.hidden") == 0);
    CHECK(removed_in(p, g, "blocks.0.mlp.hidden") == 4);
  }

  TEST_CASE("iterative schedules reach the total ratio step by step") {
    CHECK(iterative_step_ratio(0.5, 1, 2, RatioUnit::kChannels) == doctest::Approx(0.25));
    CHECK(iterative_step_ratio(0.5, 2, 2, RatioUnit::kChannels) == doctest::Approx(1.0 / 3));
    double kept = 1;
    for (int s = 1; s <= 4; ++s) kept *= 1 - iterative_step_ratio(0.6, s, 4, RatioUnit::kChannels);
    CHECK(kept == doctest::Approx(0.4));
    CHECK(iterative_step_ratio(0.5, 2, 2, RatioUnit::kParameters, 100, 80) ==
          doctest::Approx(0.375));
    CHECK_THROWS_AS((void)iterative_step_ratio(0.5, 3, 2, RatioUnit::kChannels),
                    vitc::ArgumentError);
    CHECK_THROWS_AS((void)iterative_step_ratio(1.0, 1, 2, RatioUnit::kChannels),
                    vitc::ArgumentError);
  }
}
