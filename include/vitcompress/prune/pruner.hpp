// SPDX-License-Identifier: Apache-2.0
#pragma once
// The pruner: from unit scores to the set of units to remove.
//
// Given a dependency graph and one score per unit of each group (score_groups.hpp), plan_pruning()
// decides which units go, lowest score first:
//
//   Ranking::kUniform     every enabled group loses the same fraction of its units (per layer)
//   Ranking::kGlobal      all units of all enabled groups are ranked together (scores should be
//                         normalized per group for this to be meaningful; normalize::Mean is the
//                         default), so unimportant layers lose more
//   Ranking::kIsomorphic  global ranking, but only among structurally identical groups (equal
//                         Group::isomorphism_key: every block's MLP, every block's heads...); each
//                         such class loses the same fraction. This stops global ranking from
//                         emptying some layers (Isomorphic Pruning, ECCV 2024)
//
// The ratio is counted in RatioUnit::kChannels (the fraction of units, as Torch-Pruning's
// pruning_ratio), kParameters or kMacs (the fraction of the network's parameters / multiply-
// accumulates to remove; the plan removes the fewest units that reach it, by bisection on the
// per-group fraction for uniform and isomorphic ranking, greedily down the ranking for global).
// A unit count is rounded to the nearest integer; with round_to > 1 the channels a group keeps
// (the per-head size for head-dimension groups) are then rounded to the nearest multiple of
// round_to, never above the current size (heads and blocks are not rounded). Global ranking rounds
// after ranking, so the achieved ratio can miss the target by up to round_to - 1 channels per
// group.
//
// Groups are enabled by kind (PruneOptions::kinds). `protect` lists names that must not be pruned:
// a group is left alone when its name, or the name of a tensor whose *output* channels it would
// remove, equals an entry or starts with the entry followed by '.' ("blocks.3.mlp.fc2" protects the
// embedding, whose channels are fc2's output rows; "head" protects nothing, since the embedding
// only removes the head's input columns). A block is kept when its scope name matches.
//
// Errors (ArgumentError, naming the group): a ratio outside [0, 1) or not finite; a ratio that
// would leave a group with no unit (e.g. 0.75 of 2 heads rounds to 2); a parameter or MAC ratio the
// enabled groups cannot reach; scores missing for an enabled group (ShapeError if of wrong length).
//
// Iterative pruning (k steps of prune -> fine-tune) applies iterative_step_ratio() at each step to
// the model left by the previous one.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/prune/dependency_graph.hpp"

namespace vitc::prune {

enum class Ranking { kUniform, kGlobal, kIsomorphic };
enum class RatioUnit { kChannels, kParameters, kMacs };

[[nodiscard]] inline const char* to_string(Ranking r) noexcept {
  return r == Ranking::kUniform ? "uniform" : r == Ranking::kGlobal ? "global" : "isomorphic";
}
[[nodiscard]] inline const char* to_string(RatioUnit u) noexcept {
  return u == RatioUnit::kChannels     ? "channels"
         : u == RatioUnit::kParameters ? "parameters"
                                       : "macs";
}

struct PruneOptions {
  double ratio = 0;  // in [0, 1)
  Ranking ranking = Ranking::kUniform;
  RatioUnit unit = RatioUnit::kChannels;
  Index round_to = 1;
  std::vector<GroupKind> kinds{GroupKind::kHeads, GroupKind::kHidden};
  std::vector<std::string> protect;

  void validate() const {
    if (!std::isfinite(ratio) || ratio < 0 || ratio >= 1)
      VITC_THROW(ArgumentError("pruning ratio must be in [0, 1), got " + std::to_string(ratio)));
    if (round_to < 1)
      VITC_THROW(ArgumentError("round_to must be >= 1, got " + std::to_string(round_to)));
  }
};

struct PruningPlan {
  std::vector<std::vector<Index>> removed;  // per group of the graph: units to remove, ascending
  std::int64_t parameters_before = 0, parameters_after = 0;
  std::int64_t macs_before = 0, macs_after = 0;

  [[nodiscard]] Index removed_units() const {
    Index n = 0;
    for (const auto& r : removed) n += static_cast<Index>(r.size());
    return n;
  }
  // The sizes after this plan.
  [[nodiscard]] DependencyGraph::Shrink shrink(const DependencyGraph& graph) const {
    DependencyGraph::Shrink s(graph);
    for (std::size_t g = 0; g < removed.size(); ++g)
      for (Index u : removed[g]) s.remove(static_cast<int>(g), u);
    return s;
  }
};

// The ratio for step `step` (1-based) of `steps` so that after it the cumulative reduction is
// total * step / steps: for channels relative to the sizes the previous step left
// (1 - (1 - total s/k) / (1 - total (s-1)/k)); for parameters and MACs from the measures of the
// original and the current model (1 - (1 - total s/k) * original / current, at least 0).
[[nodiscard]] inline double iterative_step_ratio(double total, int step, int steps, RatioUnit unit,
                                                 double original_measure = 0,
                                                 double current_measure = 0) {
  if (!std::isfinite(total) || total < 0 || total >= 1)
    VITC_THROW(ArgumentError("pruning ratio must be in [0, 1), got " + std::to_string(total)));
  if (steps < 1 || step < 1 || step > steps)
    VITC_THROW(ArgumentError("iterative pruning: step " + std::to_string(step) + " of " +
                             std::to_string(steps)));
  const double after = 1 - total * step / steps;
  if (unit == RatioUnit::kChannels) return 1 - after / (1 - total * (step - 1) / steps);
  if (!(original_measure > 0) || !(current_measure > 0))
    VITC_THROW(ArgumentError("iterative pruning: parameter/MAC measures must be positive"));
  return std::max(0.0, 1 - after * original_measure / current_measure);
}

namespace detail {

inline bool name_matches(const std::string& name, const std::string& pattern) {
  return name == pattern ||
         (name.size() > pattern.size() && name.compare(0, pattern.size(), pattern) == 0 &&
          name[pattern.size()] == '.');
}

struct Planner {
  const DependencyGraph& graph;
  const std::vector<std::vector<double>>& scores;
  const PruneOptions& options;
  std::vector<int> eligible;              // group indices
  std::vector<std::vector<Index>> order;  // per group: unprotected units, lowest score first
  std::int64_t base_parameters = 0, base_macs = 0;

  Planner(const DependencyGraph& g, const std::vector<std::vector<double>>& s,
          const PruneOptions& o)
      : graph(g), scores(s), options(o), order(g.groups().size()) {
    if (s.size() != g.groups().size())
      VITC_THROW(ShapeError("plan_pruning: " + std::to_string(s.size()) + " score vectors for " +
                            std::to_string(g.groups().size()) + " groups"));
    base_parameters = g.parameter_count();
    base_macs = g.macs();
    for (std::size_t gi = 0; gi < g.groups().size(); ++gi) {
      const Group& grp = g.groups()[gi];
      if (std::find(o.kinds.begin(), o.kinds.end(), grp.kind) == o.kinds.end()) continue;
      if (group_protected(grp)) continue;
      const auto& sc = s[gi];
      if (sc.empty())
        VITC_THROW(ArgumentError("plan_pruning: no scores for group '" + grp.name + "'"));
      if (static_cast<Index>(sc.size()) != grp.units)
        VITC_THROW(ShapeError("plan_pruning: group '" + grp.name + "' has " +
                              std::to_string(grp.units) + " units, " + std::to_string(sc.size()) +
                              " scores"));
      for (std::size_t u = 0; u < sc.size(); ++u)
        if (!std::isfinite(sc[u]))
          VITC_THROW(ArgumentError("plan_pruning: score of unit " + std::to_string(u) +
                                   " of group '" + grp.name + "' is not finite"));
      for (Index u = 0; u < grp.units; ++u)
        if (!unit_protected(grp, u)) order[gi].push_back(u);
      std::stable_sort(order[gi].begin(), order[gi].end(), [&](Index a, Index b) {
        return sc[static_cast<std::size_t>(a)] < sc[static_cast<std::size_t>(b)];
      });
      eligible.push_back(static_cast<int>(gi));
    }
  }

  [[nodiscard]] bool protected_name(const std::string& name) const {
    for (const std::string& p : options.protect)
      if (name_matches(name, p)) return true;
    return false;
  }
  [[nodiscard]] bool group_protected(const Group& grp) const {
    if (protected_name(grp.name)) return true;
    if (grp.kind == GroupKind::kDepth) return false;
    for (const GroupMember& m : grp.members)
      if (!m.input_side && protected_name(graph.params()[static_cast<std::size_t>(m.param)].name))
        return true;
    return false;
  }
  [[nodiscard]] bool unit_protected(const Group& grp, Index u) const {
    return grp.kind == GroupKind::kDepth &&
           protected_name(grp.unit_names[static_cast<std::size_t>(u)]);
  }

  // Units removed from group g when `k` are chosen, after rounding what it keeps; nullopt when
  // the group would be left empty.
  [[nodiscard]] std::optional<Index> rounded(int g, Index k) const {
    const Group& grp = graph.groups()[static_cast<std::size_t>(g)];
    const Index n = grp.units;
    if (k <= 0) return Index{0};
    Index kept = n - k;
    const Index m = options.round_to;
    if (m > 1 && is_channel_kind(grp.kind)) kept = std::min(n, (kept + m / 2) / m * m);
    if (kept <= 0) return std::nullopt;
    return std::min<Index>(n - kept, static_cast<Index>(order[static_cast<std::size_t>(g)].size()));
  }

  // Removes the `counts[g]` lowest units of every eligible group.
  [[nodiscard]] std::vector<std::vector<Index>> take(const std::vector<Index>& counts) const {
    std::vector<std::vector<Index>> removed(graph.groups().size());
    for (int g : eligible) {
      const auto& o = order[static_cast<std::size_t>(g)];
      auto& r = removed[static_cast<std::size_t>(g)];
      r.assign(o.begin(), o.begin() + counts[static_cast<std::size_t>(g)]);
      std::sort(r.begin(), r.end());
    }
    return removed;
  }

  [[nodiscard]] std::int64_t measure(const std::vector<std::vector<Index>>& removed) const {
    DependencyGraph::Shrink s(graph);
    for (std::size_t g = 0; g < removed.size(); ++g)
      for (Index u : removed[g]) s.remove(static_cast<int>(g), u);
    return options.unit == RatioUnit::kMacs ? s.macs() : s.parameter_count();
  }

  // Uniform or isomorphic selection at per-group (per-class) fraction r; `failed` names the group
  // that would be emptied.
  std::optional<std::vector<std::vector<Index>>> select(double r, std::string* failed) const {
    std::vector<Index> counts(graph.groups().size(), 0);
    if (options.ranking == Ranking::kUniform) {
      for (int g : eligible)
        counts[static_cast<std::size_t>(g)] = std::llround(
            r * static_cast<double>(graph.groups()[static_cast<std::size_t>(g)].units));
    } else {
      std::map<std::string, std::vector<int>> classes;
      for (int g : eligible)
        classes[graph.groups()[static_cast<std::size_t>(g)].isomorphism_key].push_back(g);
      for (const auto& [key, gs] : classes) {
        Index total = 0;
        for (int g : gs) total += graph.groups()[static_cast<std::size_t>(g)].units;
        pick_lowest(gs, std::llround(r * static_cast<double>(total)), counts);
      }
    }
    return finish(counts, failed);
  }

  // Among groups `gs`, the `k` lowest-scoring unprotected units overall; adds to counts.
  void pick_lowest(const std::vector<int>& gs, Index k, std::vector<Index>& counts) const {
    std::vector<std::size_t> next(gs.size(), 0);
    for (Index taken = 0; taken < k; ++taken) {
      int best = -1;
      for (std::size_t i = 0; i < gs.size(); ++i) {
        const auto& o = order[static_cast<std::size_t>(gs[i])];
        if (next[i] >= o.size()) continue;
        const double s =
            scores[static_cast<std::size_t>(gs[i])][static_cast<std::size_t>(o[next[i]])];
        if (best < 0 ||
            s < scores[static_cast<std::size_t>(gs[static_cast<std::size_t>(best)])]
                      [static_cast<std::size_t>(
                          order[static_cast<std::size_t>(gs[static_cast<std::size_t>(best)])]
                               [next[static_cast<std::size_t>(best)]])])
          best = static_cast<int>(i);
      }
      if (best < 0) break;
      ++next[static_cast<std::size_t>(best)];
      ++counts[static_cast<std::size_t>(gs[static_cast<std::size_t>(best)])];
    }
  }

  std::optional<std::vector<std::vector<Index>>> finish(std::vector<Index>& counts,
                                                        std::string* failed) const {
    for (int g : eligible) {
      const auto k = rounded(g, counts[static_cast<std::size_t>(g)]);
      if (!k) {
        if (failed) *failed = graph.groups()[static_cast<std::size_t>(g)].name;
        return std::nullopt;
      }
      counts[static_cast<std::size_t>(g)] = *k;
    }
    return take(counts);
  }

  [[nodiscard]] PruningPlan plan() const {
    PruningPlan plan;
    plan.parameters_before = base_parameters;
    plan.macs_before = base_macs;
    plan.removed.assign(graph.groups().size(), {});
    const double r = options.ratio;
    if (r > 0 && !eligible.empty()) {
      if (options.ranking == Ranking::kGlobal)
        plan.removed = global();
      else if (options.unit == RatioUnit::kChannels)
        plan.removed = checked(select(r, nullptr), r);
      else
        plan.removed = bisect();
    }
    DependencyGraph::Shrink s = plan.shrink(graph);
    plan.parameters_after = s.parameter_count();
    plan.macs_after = s.macs();
    return plan;
  }

  std::vector<std::vector<Index>> checked(std::optional<std::vector<std::vector<Index>>> sel,
                                          double r) const {
    if (sel) return std::move(*sel);
    std::string failed;
    (void)select(r, &failed);
    VITC_THROW(ArgumentError("pruning ratio " + std::to_string(options.ratio) +
                             " would leave group '" + failed + "' with no unit"));
  }

  [[nodiscard]] std::int64_t target_reduction() const {
    const std::int64_t base = options.unit == RatioUnit::kMacs ? base_macs : base_parameters;
    return static_cast<std::int64_t>(std::ceil(options.ratio * static_cast<double>(base)));
  }

  std::vector<std::vector<Index>> bisect() const {
    const std::int64_t base = options.unit == RatioUnit::kMacs ? base_macs : base_parameters;
    const std::int64_t target = target_reduction();
    const auto reduction = [&](double r) -> std::optional<std::int64_t> {
      auto sel = select(r, nullptr);
      if (!sel) return std::nullopt;
      return base - measure(*sel);
    };
    // The largest feasible fraction.
    double lo = 0, hi = 1;
    for (int i = 0; i < 60; ++i) {
      const double mid = 0.5 * (lo + hi);
      (reduction(mid) ? lo : hi) = mid;
    }
    const auto best = reduction(lo);
    if (!best || *best < target)
      VITC_THROW(ArgumentError(
          "cannot remove " + std::to_string(options.ratio * 100) + "% of the " +
          to_string(options.unit) + " by pruning the enabled groups; at most " +
          std::to_string(best ? 100.0 * static_cast<double>(*best) / static_cast<double>(base)
                              : 0.0) +
          "% can be removed"));
    double a = 0, b = lo;  // reduction(a) < target <= reduction(b)
    for (int i = 0; i < 60; ++i) {
      const double mid = 0.5 * (a + b);
      const auto red = reduction(mid);
      (red && *red >= target ? b : a) = mid;
    }
    return *select(b, nullptr);
  }

  std::vector<std::vector<Index>> global() const {
    // Every eligible unit, lowest score first (ties: group order, then unit order).
    struct Cand {
      double score;
      int group;
      Index unit;
    };
    std::vector<Cand> all;
    for (int g : eligible)
      for (Index u : order[static_cast<std::size_t>(g)])
        all.push_back({scores[static_cast<std::size_t>(g)][static_cast<std::size_t>(u)], g, u});
    std::stable_sort(all.begin(), all.end(),
                     [](const Cand& a, const Cand& b) { return a.score < b.score; });
    std::vector<Index> counts(graph.groups().size(), 0);
    const auto empties = [&](int g) {
      VITC_THROW(ArgumentError("global ranking at ratio " + std::to_string(options.ratio) +
                               " would remove every unit of group '" +
                               graph.groups()[static_cast<std::size_t>(g)].name +
                               "'; lower the ratio, protect the group or rank isomorphically"));
    };
    if (options.unit == RatioUnit::kChannels) {
      Index total = 0;
      for (int g : eligible) total += graph.groups()[static_cast<std::size_t>(g)].units;
      const Index k = std::llround(options.ratio * static_cast<double>(total));
      for (Index i = 0; i < k && i < static_cast<Index>(all.size()); ++i) {
        const int g = all[static_cast<std::size_t>(i)].group;
        if (++counts[static_cast<std::size_t>(g)] >=
            graph.groups()[static_cast<std::size_t>(g)].units)
          empties(g);
      }
    } else {
      const std::int64_t base = options.unit == RatioUnit::kMacs ? base_macs : base_parameters;
      const std::int64_t target = target_reduction();
      DependencyGraph::Shrink s(graph);
      std::int64_t now = base;
      for (const Cand& c : all) {
        if (base - now >= target) break;
        if (++counts[static_cast<std::size_t>(c.group)] >=
            graph.groups()[static_cast<std::size_t>(c.group)].units)
          empties(c.group);
        s.remove(c.group, c.unit);
        now = options.unit == RatioUnit::kMacs ? s.macs() : s.parameter_count();
      }
      if (base - now < target)
        VITC_THROW(ArgumentError("cannot remove " + std::to_string(options.ratio * 100) +
                                 "% of the " + to_string(options.unit) +
                                 " by pruning the enabled groups"));
    }
    std::string failed;
    auto sel = finish(counts, &failed);
    if (!sel)
      VITC_THROW(ArgumentError("pruning ratio " + std::to_string(options.ratio) +
                               " would leave group '" + failed + "' with no unit"));
    return std::move(*sel);
  }
};

}  // namespace detail

// Plans which units to remove (see the file comment). `scores` has one vector per group of the
// graph (empty for groups whose kind is not enabled).
[[nodiscard]] inline PruningPlan plan_pruning(const DependencyGraph& graph,
                                              const std::vector<std::vector<double>>& scores,
                                              const PruneOptions& options) {
  options.validate();
  return detail::Planner(graph, scores, options).plan();
}

// Plans the removal of exactly the units whose score is zero, in the groups of the given kinds
// (e.g. to drop dead heads and neurons losslessly). ArgumentError if a group would lose every unit.
[[nodiscard]] inline PruningPlan plan_zero_units(const DependencyGraph& graph,
                                                 const std::vector<std::vector<double>>& scores,
                                                 const std::vector<GroupKind>& kinds) {
  PruneOptions o;
  o.kinds = kinds;
  detail::Planner planner(graph, scores, o);
  PruningPlan plan;
  plan.removed.assign(graph.groups().size(), {});
  for (int g : planner.eligible) {
    const Group& grp = graph.groups()[static_cast<std::size_t>(g)];
    for (Index u = 0; u < grp.units; ++u)
      if (scores[static_cast<std::size_t>(g)][static_cast<std::size_t>(u)] == 0.0)
        plan.removed[static_cast<std::size_t>(g)].push_back(u);
    if (static_cast<Index>(plan.removed[static_cast<std::size_t>(g)].size()) == grp.units)
      VITC_THROW(ArgumentError("every unit of group '" + grp.name + "' has zero importance"));
  }
  plan.parameters_before = planner.base_parameters;
  plan.macs_before = planner.base_macs;
  DependencyGraph::Shrink s = plan.shrink(graph);
  plan.parameters_after = s.parameter_count();
  plan.macs_after = s.macs();
  return plan;
}

}  // namespace vitc::prune
