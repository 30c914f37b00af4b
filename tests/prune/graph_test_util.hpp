// SPDX-License-Identifier: Apache-2.0
#pragma once
// Shared by the dependency-graph tests: a group's members as "parameter/dim" names.

#include <set>
#include <string>

#include "vitcompress/prune/dependency_graph.hpp"

namespace vitc::test {

inline std::set<std::string> member_names(const prune::DependencyGraph& g,
                                          const prune::Group& grp) {
  std::set<std::string> out;
  for (const prune::GroupMember& m : grp.members)
    out.insert(g.params()[static_cast<std::size_t>(m.param)].name + "/" + std::to_string(m.dim));
  return out;
}

}  // namespace vitc::test
