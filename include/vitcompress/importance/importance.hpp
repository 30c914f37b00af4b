// SPDX-License-Identifier: Apache-2.0
#pragma once
// Importance estimation for structured pruning, over plain tensor views (no model needed):
//
//   running_mean.hpp      RunningMeans: true running sums/means of per-parameter statistics
//   group_importance.hpp  the ImportanceEstimator concept, GroupMember, channel_view(), group
//                         reductions (sum, mean, max, first), normalizers (none, mean, max, sum,
//                         LAMP), group_importance()
//   magnitude.hpp         Magnitude<1> (L1), Magnitude<2> (L2 / Frobenius)
//   taylor.hpp            Taylor: |Σ w·∂L/∂w|
//   hessian_diag.hpp      HessianDiag<EmpiricalFisher | Hutchinson>: ½·w²·h; hutchinson_probe()

#include "vitcompress/importance/group_importance.hpp"
#include "vitcompress/importance/hessian_diag.hpp"
#include "vitcompress/importance/magnitude.hpp"
#include "vitcompress/importance/running_mean.hpp"
#include "vitcompress/importance/taylor.hpp"
