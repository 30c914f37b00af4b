// SPDX-License-Identifier: Apache-2.0
// The dependency graph on small hand-written descriptions: coupling found by propagation, and
// inconsistent descriptions rejected with a message naming the operator.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "graph_test_util.hpp"
#include "vitcompress/prune/dependency_graph.hpp"
#include "vitcompress/prune/network_description.hpp"

using namespace vitc::prune;
using vitc::Index;

using vitc::test::member_names;

TEST_SUITE("prune") {
  TEST_CASE("an MLP has one hidden group: fc1 rows and bias, fc2 columns") {
    NetworkDescription n;
    const ValueId x = n.input("x", 4);
    const ValueId h = n.linear("fc1", x, 6, "fc1.w", "fc1.b", 1);
    const ValueId a = n.elementwise("act", h);
    n.output(n.linear("fc2", a, 2, "fc2.w", "fc2.b", 1));
    const DependencyGraph g(n);
    REQUIRE(g.groups().size() == 1);
    const Group& grp = g.groups()[0];
    CHECK(grp.name == "fc1");
    CHECK(grp.kind == GroupKind::kHidden);
    CHECK(grp.units == 6);
    CHECK(member_names(g, grp) == std::set<std::string>{"fc1.w/0", "fc1.b/0", "fc2.w/1"});
    for (const GroupMember& m : grp.members)
      for (Index c = 0; c < 6; ++c) CHECK(m.unit_of_channel[static_cast<std::size_t>(c)] == c);
    CHECK(g.parameter_count() == 6 * 4 + 6 + 2 * 6 + 2);
    CHECK(g.macs() == 4 * 6 + 6 * 2);
    DependencyGraph::Shrink s(g);
    CHECK(s.remove(0, 2));
    CHECK_FALSE(s.remove(0, 2));
    CHECK(s.parameter_count() == 5 * 4 + 5 + 2 * 5 + 2);
    CHECK(s.kept_indices(g.find_param("fc2.w"), 1) == std::vector<Index>{0, 1, 3, 4, 5});
    CHECK(s.kept_indices(g.find_param("fc2.w"), 0) == std::vector<Index>{0, 1});
  }

  TEST_CASE("concat: each piece's channels follow their offset into the consumer") {
    NetworkDescription n;
    const ValueId x = n.input("x", 4);
    const ValueId a = n.linear("a", x, 3, "a.w", "", 1);
    const ValueId b = n.linear("b", x, 2, "b.w", "", 1);
    const ValueId c = n.concat("cat", {a, b});
    n.output(n.linear("out", c, 2, "out.w", "", 1));
    const DependencyGraph g(n);
    REQUIRE(g.groups().size() == 2);
    const Group& ga = g.group("a");
    const Group& gb = g.group("b");
    CHECK(ga.units == 3);
    CHECK(gb.units == 2);
    const auto& cols_b = gb.members.back();
    CHECK(g.params()[static_cast<std::size_t>(cols_b.param)].name == "out.w");
    CHECK(cols_b.unit_of_channel == std::vector<Index>{kNoUnit, kNoUnit, kNoUnit, 0, 1});
    CHECK(g.find_group("nothing") == -1);
    CHECK_THROWS_AS((void)g.group("nothing"), vitc::ArgumentError);
  }

  TEST_CASE("a shared weight couples the channels of both its uses") {
    NetworkDescription n;
    const ValueId x = n.input("x", 3);
    const ValueId h1 = n.linear("l1", x, 4, "up.w", "", 1);
    const ValueId h2 = n.linear("l2", x, 4, "up.w", "", 1);  // the same tensor used twice
    const ValueId s = n.concat("cat", {h1, h2});
    n.output(n.linear("out", s, 2, "out.w", "", 1));
    const DependencyGraph g(n);
    REQUIRE(g.groups().size() == 1);  // h1[c] and h2[c] are one unit through up.w row c
    CHECK(g.groups()[0].units == 4);
    CHECK(g.params().size() == 2);
    CHECK(member_names(g, g.groups()[0]) == std::set<std::string>{"up.w/0", "out.w/1"});
  }

  TEST_CASE("residual channels, fixed inputs and outputs, depth units") {
    NetworkDescription n;
    const ValueId img = n.input("img", 3);
    ValueId x = n.linear("embed", img, 4, "embed.w", "", 1);
    n.begin_scope("b0");
    const ValueId h = n.linear("b0.fc", x, 5, "b0.fc.w", "b0.fc.b", 1);
    x = n.residual_add("b0.add", x, n.linear("b0.out", h, 4, "b0.out.w", "", 1));
    n.end_scope();
    n.begin_scope("b1");  // not removable: its branch reads a value from outside the stream
    const ValueId h1 = n.linear("b1.fc", x, 5, "b1.fc.w", "", 1);
    x = n.residual_add("b1.add", x, n.linear("b1.out", h1, 4, "b1.out.w", "", 1));
    n.end_scope();
    const ValueId y = n.linear("mix", h, 4, "mix.w", "", 1);  // uses b0's hidden value outside b0
    n.output(n.linear("head", n.residual_add("final", x, y), 2, "head.w", "", 1));
    const DependencyGraph g(n);
    const Group& r = g.group("embed");
    CHECK(r.kind == GroupKind::kResidual);
    CHECK(r.units == 4);
    const Group& d = g.group("depth");
    CHECK(d.units == 1);
    CHECK(d.unit_names == std::vector<std::string>{"b1"});
    CHECK(g.group("b0.fc").kind == GroupKind::kHidden);
  }

  TEST_CASE("inconsistent descriptions are rejected, naming the operator") {
    SUBCASE("residual add of different widths") {
      NetworkDescription n;
      const ValueId x = n.input("x", 4);
      const ValueId a = n.linear("a", x, 4, "a.w", "", 1);
      const ValueId b = n.linear("b", x, 3, "b.w", "", 1);
      n.output(n.residual_add("add", a, b));
      CHECK_THROWS_WITH_AS(DependencyGraph{n},
                           doctest::Contains("residual_add 'add': the stream has 4 channels, the "
                                             "branch 3"),
                           vitc::ShapeError);
    }
    SUBCASE("attention with query and key of different widths") {
      NetworkDescription n;
      const ValueId x = n.input("x", 4);
      const ValueId q = n.head_split("q", n.linear("lq", x, 4, "q.w", "", 1), 2);
      const ValueId k = n.head_split("k", n.linear("lk", x, 6, "k.w", "", 1), 2);
      const ValueId v = n.head_split("v", n.linear("lv", x, 4, "v.w", "", 1), 2);
      n.output(n.head_merge("m", n.attention("attn", q, k, v, 3)));
      CHECK_THROWS_WITH_AS(DependencyGraph{n}, doctest::Contains("attention 'attn'"),
                           vitc::ShapeError);
    }
    SUBCASE("attention on values not split into heads") {
      NetworkDescription n;
      const ValueId x = n.input("x", 4);
      const ValueId q = n.linear("lq", x, 4, "q.w", "", 1);
      n.output(n.attention("attn", q, q, q, 3));
      CHECK_THROWS_WITH_AS(DependencyGraph{n}, doctest::Contains("not split into heads"),
                           vitc::ArgumentError);
    }
    SUBCASE("heads that do not divide the channels") {
      NetworkDescription n;
      const ValueId x = n.input("x", 5);
      n.output(n.head_merge("m", n.head_split("hs", x, 2)));
      CHECK_THROWS_WITH_AS(DependencyGraph{n}, doctest::Contains("head_split 'hs'"),
                           vitc::ShapeError);
    }
    SUBCASE("a parameter used with two shapes") {
      NetworkDescription n;
      const ValueId x = n.input("x", 4);
      const ValueId a = n.linear("a", x, 4, "w", "", 1);
      n.output(n.linear("b", a, 3, "w", "", 1));
      CHECK_THROWS_WITH_AS(DependencyGraph{n}, doctest::Contains("parameter 'w' is used by 'a'"),
                           vitc::ShapeError);
    }
    SUBCASE("a split whose pieces do not add up") {
      NetworkDescription n;
      const ValueId x = n.input("x", 4);
      const auto parts = n.split("split", x, {2, 1});
      n.output(parts[0]);
      CHECK_THROWS_WITH_AS(DependencyGraph{n}, doctest::Contains("split 'split'"),
                           vitc::ShapeError);
    }
    SUBCASE("no output") {
      NetworkDescription n;
      n.linear("a", n.input("x", 4), 4, "w", "", 1);
      CHECK_THROWS_AS(DependencyGraph{n}, vitc::ArgumentError);
    }
    SUBCASE("the builder rejects unknown values and nested scopes at once") {
      NetworkDescription n;
      CHECK_THROWS_WITH_AS(n.linear("a", 7, 4, "w", "", 1), doctest::Contains("a: unknown value"),
                           vitc::ArgumentError);
      n.begin_scope("s");
      CHECK_THROWS_AS(n.begin_scope("t"), vitc::ArgumentError);
      n.end_scope();
      CHECK_THROWS_AS(n.end_scope(), vitc::ArgumentError);
    }
  }
}
