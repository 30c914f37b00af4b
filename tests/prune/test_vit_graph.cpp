// SPDX-License-Identifier: Apache-2.0
// The ViT graph finds exactly the expected groups, with the expected members, and counts
// parameters and MACs as ViTConfig does.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "../model/vit_test_util.hpp"
#include "graph_test_util.hpp"
#include "vitcompress/prune/vit_graph.hpp"

using namespace vitc::prune;
using vitc::Index;

using vitc::test::member_names;

TEST_SUITE("prune") {
  TEST_CASE("ViT graph: exactly the expected groups") {
    const auto config = vitc::test::tiny_config();
    const ViTGraph vg = vit_graph(config);
    const DependencyGraph& g = vg.graph;
    std::vector<std::string> names;
    std::vector<Index> units;
    std::vector<GroupKind> kinds;
    for (const Group& grp : g.groups()) {
      names.push_back(grp.name);
      units.push_back(grp.units);
      kinds.push_back(grp.kind);
    }
    CHECK(names == std::vector<std::string>{"embed", "blocks.0.attn.heads", "blocks.0.attn.qk_dims",
                                            "blocks.0.attn.v_dims", "blocks.0.mlp.hidden",
                                            "blocks.1.attn.heads", "blocks.1.attn.qk_dims",
                                            "blocks.1.attn.v_dims", "blocks.1.mlp.hidden",
                                            "depth"});
    CHECK(units == std::vector<Index>{8, 2, 3, 4, 10, 3, 2, 3, 6, 2});
    using K = GroupKind;
    CHECK(kinds == std::vector<K>{K::kResidual, K::kHeads, K::kQueryKeyDims, K::kValueDims,
                                  K::kHidden, K::kHeads, K::kQueryKeyDims, K::kValueDims,
                                  K::kHidden, K::kDepth});
    CHECK(g.parameter_count() == config.parameter_count());
    CHECK(g.macs() == config.macs_per_image());
    // Every graph parameter is a timm tensor of ViTWeights, with its shape.
    vitc::model::ViTWeights<float> w(config);
    std::size_t seen = 0;
    w.for_each([&](const std::string& name, auto view) {
      const int p = g.find_param(name);
      REQUIRE(p >= 0);
      const auto& shape = g.params()[static_cast<std::size_t>(p)].shape;
      CHECK(std::vector<Index>(view.shape().begin(), view.shape().end()) == shape);
      ++seen;
    });
    CHECK(seen == g.params().size());
  }

  TEST_CASE("ViT graph: DeiT shapes count like ViTConfig") {
    for (const auto& c :
         {vitc::model::ViTConfig::deit_tiny(), vitc::model::ViTConfig::deit_small()}) {
      const ViTGraph vg = vit_graph(c);
      CHECK(vg.graph.parameter_count() == c.parameter_count());
      CHECK(vg.graph.macs() == c.macs_per_image());
      CHECK(vg.graph.groups().size() == 2 + 4 * c.blocks.size());
      CHECK(vg.graph.group("embed").units == c.embed_dim);
      CHECK(vg.graph.group("blocks.11.mlp.hidden").units == c.blocks[11].mlp_hidden);
    }
  }

  TEST_CASE("ViT graph: members of each group") {
    const ViTGraph vg = vit_graph(vitc::test::tiny_config());
    const DependencyGraph& g = vg.graph;
    CHECK(member_names(g, g.group("blocks.0.mlp.hidden")) ==
          std::set<std::string>{"blocks.0.mlp.fc1.weight/0", "blocks.0.mlp.fc1.bias/0",
                                "blocks.0.mlp.fc2.weight/1"});
    const Group& heads = g.group("blocks.0.attn.heads");
    CHECK(member_names(g, heads) == std::set<std::string>{"blocks.0.attn.qkv.weight/0",
                                                          "blocks.0.attn.qkv.bias/0",
                                                          "blocks.0.attn.proj.weight/1"});
    // qkv rows: q (2 heads x 3) | k (2 x 3) | v (2 x 4); proj columns: v (2 x 4).
    const std::vector<Index> qkv_heads{0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1};
    for (const GroupMember& m : heads.members) {
      const auto& name = g.params()[static_cast<std::size_t>(m.param)].name;
      if (name.ends_with("qkv.weight")) CHECK(m.unit_of_channel == qkv_heads);
      if (name.ends_with("proj.weight"))
        CHECK(m.unit_of_channel == std::vector<Index>{0, 0, 0, 0, 1, 1, 1, 1});
    }
    const Group& qk = g.group("blocks.0.attn.qk_dims");
    CHECK(member_names(g, qk) ==
          std::set<std::string>{"blocks.0.attn.qkv.weight/0", "blocks.0.attn.qkv.bias/0"});
    const Index n = kNoUnit;
    CHECK(qk.members.front().unit_of_channel ==
          std::vector<Index>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, n, n, n, n, n, n, n, n});
    const Group& v = g.group("blocks.0.attn.v_dims");
    CHECK(member_names(g, v) == std::set<std::string>{"blocks.0.attn.qkv.weight/0",
                                                      "blocks.0.attn.qkv.bias/0",
                                                      "blocks.0.attn.proj.weight/1"});
    std::set<std::string> embed;
    for (const char* p :
         {"cls_token/2", "pos_embed/2", "patch_embed.proj.weight/0", "patch_embed.proj.bias/0",
          "norm.weight/0", "norm.bias/0", "head.weight/1"})
      embed.insert(p);
    for (int i = 0; i < 2; ++i) {
      const std::string b = "blocks." + std::to_string(i) + ".";
      for (const char* p :
           {"norm1.weight/0", "norm1.bias/0", "attn.qkv.weight/1", "attn.proj.weight/0",
            "attn.proj.bias/0", "norm2.weight/0", "norm2.bias/0", "mlp.fc1.weight/1",
            "mlp.fc2.weight/0", "mlp.fc2.bias/0"})
        embed.insert(b + p);
    }
    CHECK(member_names(g, g.group("embed")) == embed);
    const Group& depth = g.group("depth");
    CHECK(depth.unit_names == std::vector<std::string>{"blocks.0", "blocks.1"});
    CHECK(depth.members.size() == 24);  // 12 tensors per block
    // Isomorphic groups: the two blocks differ, so their head groups differ.
    CHECK(g.group("blocks.0.attn.heads").isomorphism_key !=
          g.group("blocks.1.attn.heads").isomorphism_key);
    const ViTGraph uniform = vit_graph(vitc::model::ViTConfig::uniform(8, 4, 1, 8, 3, 2, 12, 3));
    CHECK(uniform.graph.group("blocks.0.mlp.hidden").isomorphism_key ==
          uniform.graph.group("blocks.2.mlp.hidden").isomorphism_key);
  }

  TEST_CASE("Shrink on a ViT: sizes, counts and the pruned config agree") {
    const auto config = vitc::test::tiny_config();
    const ViTGraph vg = vit_graph(config);
    const DependencyGraph& g = vg.graph;
    DependencyGraph::Shrink s(g);
    s.remove(g.find_group("blocks.0.attn.heads"), 1);
    s.remove(g.find_group("blocks.0.attn.qk_dims"), 0);
    s.remove(g.find_group("blocks.1.attn.v_dims"), 2);
    s.remove(g.find_group("blocks.1.mlp.hidden"), 0);
    s.remove(g.find_group("blocks.1.mlp.hidden"), 5);
    s.remove(g.find_group("embed"), 3);
    const auto pc = pruned_config(vg, s);
    CHECK(pc.embed_dim == 7);
    CHECK(pc.blocks[0] == vitc::model::BlockConfig{1, 2, 4, 10});
    CHECK(pc.blocks[1] == vitc::model::BlockConfig{3, 2, 2, 4});
    CHECK(s.parameter_count() == pc.parameter_count());
    CHECK(s.macs() == pc.macs_per_image());
    // qkv rows kept in block 0: q head 0 dims 1, 2 | k head 0 dims 1, 2 | v head 0.
    CHECK(s.kept_indices(g.find_param("blocks.0.attn.qkv.weight"), 0) ==
          std::vector<Index>{1, 2, 7, 8, 12, 13, 14, 15});
    s.remove(g.find_group("depth"), 0);
    const auto pd = pruned_config(vg, s);
    CHECK(pd.blocks.size() == 1);
    CHECK(pd.blocks[0] == vitc::model::BlockConfig{3, 2, 2, 4});
    CHECK(s.parameter_count() == pd.parameter_count());
    CHECK(s.macs() == pd.macs_per_image());
    CHECK(s.param_removed(g.find_param("blocks.0.norm1.weight")));
  }
}
