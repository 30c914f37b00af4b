// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "../model/vit_test_util.hpp"
#include "vitcompress/model/trainable_vit.hpp"
#include "vitcompress/prune/distillation.hpp"

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;

TEST_SUITE("prune") {
  TEST_CASE(
      "distillation: alpha 0 is plain training; a student equal to its teacher has no soft "
      "gradient") {
    const auto c = vitc::test::tiny_config();
    auto teacher = vitc::test::nontrivial_weights<float>(c, 2);
    auto student = teacher;
    const auto images = vitc::test::random_images<float>(c, 3, 4);
    Tensor<std::int32_t, 1> labels({3});
    labels(0) = 0;
    labels(1) = 2;
    labels(2) = 1;

    vitc::prune::DistilledViT hard(student, teacher, {0.0, 2.0});
    model::TrainableViT<> plain(student);
    const auto sh = hard.compute_gradients(images.cview(), labels.cview(), 0.1);
    const auto sp = plain.compute_gradients(images.cview(), labels.cview(), 0.1);
    CHECK(sh.loss_sum == doctest::Approx(sp.loss_sum));
    const auto gh = hard.parameter_slots(), gp = plain.parameter_slots();
    REQUIRE(gh.size() == gp.size());
    for (std::size_t i = 0; i < gh.size(); ++i)
      for (std::size_t j = 0; j < gh[i].grad.size(); j += 3)
        CHECK(gh[i].grad[j] == doctest::Approx(gp[i].grad[j]).epsilon(1e-4));

    vitc::prune::DistilledViT soft(student, teacher, {1.0, 3.0});
    const auto ss = soft.compute_gradients(images.cview(), labels.cview(), 0.0);
    CHECK(std::abs(ss.loss_sum) < 1e-9);
    double max_grad = 0;
    for (const auto& slot : soft.parameter_slots())
      for (float g : slot.grad) max_grad = std::max(max_grad, std::abs(static_cast<double>(g)));
    CHECK(max_grad < 1e-6);

    CHECK_THROWS_AS(vitc::prune::DistilledViT(student, teacher, {1.5, 2.0}), vitc::ArgumentError);
    CHECK_THROWS_AS(vitc::prune::DistilledViT(student, teacher, {0.5, 0.0}), vitc::ArgumentError);
  }

  TEST_CASE("distillation: the student's gradient is the derivative of the mean combined loss") {
    // Central differences of loss_sum / B (in float, hence the loose tolerance) against the
    // gradient, for a mix of hard and soft terms, label smoothing, and a student that differs from
    // its teacher.
    const auto c = vitc::test::tiny_config();
    const auto teacher = vitc::test::nontrivial_weights<float>(c, 2);
    auto student = vitc::test::nontrivial_weights<float>(c, 5);
    const auto images = vitc::test::random_images<float>(c, 4, 6);
    Tensor<std::int32_t, 1> labels({4});
    for (Index i = 0; i < 4; ++i) labels(i) = static_cast<std::int32_t>(i % 3);
    vitc::prune::DistilledViT net(student, teacher, {0.6, 2.5});
    const double smoothing = 0.1;
    (void)net.compute_gradients(images.cview(), labels.cview(), smoothing);
    auto slots = net.parameter_slots();
    std::vector<std::vector<float>> grads;
    for (const auto& s : slots) grads.emplace_back(s.grad.begin(), s.grad.end());
    const auto mean_loss = [&] {
      return net.compute_gradients(images.cview(), labels.cview(), smoothing).loss_sum / 4.0;
    };
    const float eps = 1e-2f;
    int checked = 0;
    for (std::size_t i = 0; i < slots.size(); ++i)
      for (std::size_t j = 0; j < slots[i].value.size(); j += 13) {
        float& w = slots[i].value[j];
        const float saved = w;
        w = saved + eps;
        const double up = mean_loss();
        w = saved - eps;
        const double down = mean_loss();
        w = saved;
        const double fd = (up - down) / (2.0 * static_cast<double>(eps));
        const double g = grads[i][j];
        CAPTURE(slots[i].name);
        CAPTURE(j);
        CHECK(std::abs(fd - g) <= 2e-3 + 2e-2 * std::abs(g));
        ++checked;
      }
    CHECK(checked > 50);
  }
}
