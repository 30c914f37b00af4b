// SPDX-License-Identifier: Apache-2.0
#pragma once
// The parameters of a ViT, as owning tensors under timm's names and shapes.
//
// ViTWeights<T> is plain data: a ViTConfig plus one Tensor per timm parameter. The same type holds
// gradients (a ViTWeights of zeros with the same config), so that an optimizer, an importance
// estimator or a saver walks weights and gradients with one loop:
//
//   name                          shape                      member
//   cls_token                     [1, 1, D]                  cls_token
//   pos_embed                     [1, T, D]  (T = tokens)     pos_embed
//   patch_embed.proj.weight       [D, C, P, P]               patch_embed.weight
//   patch_embed.proj.bias         [D]                        patch_embed.bias
//   blocks.{i}.norm1.weight/bias  [D]                        blocks[i].norm1
//   blocks.{i}.attn.qkv.weight    [2*H*dqk + H*dv, D]        blocks[i].qkv   (rows q | k | v)
//   blocks.{i}.attn.qkv.bias      [2*H*dqk + H*dv]
//   blocks.{i}.attn.proj.weight   [D, H*dv]                  blocks[i].proj
//   blocks.{i}.attn.proj.bias     [D]
//   blocks.{i}.norm2.weight/bias  [D]                        blocks[i].norm2
//   blocks.{i}.mlp.fc1.weight     [hidden, D]                blocks[i].fc1
//   blocks.{i}.mlp.fc1.bias       [hidden]
//   blocks.{i}.mlp.fc2.weight     [D, hidden]                blocks[i].fc2
//   blocks.{i}.mlp.fc2.bias       [D]
//   norm.weight/bias              [D]                        norm
//   head.weight                   [classes, D]               head
//   head.bias                     [classes]
//
// The table's order is timm's state_dict order and the order of every iteration below; for two
// ViTWeights of equal config, parameters() lists the same names in the same order.
//
// Members are public so that the pruner can replace tensors with physically smaller ones; whoever
// does so must keep `config` in step (check_shapes() verifies the pair).

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/vit_config.hpp"

namespace vitc::model {

template <class T>
struct LinearWeights {
  Tensor<T, 2> weight;  // [out, in], PyTorch's nn.Linear layout
  Tensor<T, 1> bias;    // [out]
};

template <class T>
struct LayerNormWeights {
  Tensor<T, 1> weight;  // gamma [D]
  Tensor<T, 1> bias;    // beta [D]
};

template <class T>
struct PatchEmbedWeights {
  Tensor<T, 4> weight;  // [D, C, P, P], the Conv2d kernel
  Tensor<T, 1> bias;    // [D]
};

template <class T>
struct BlockWeights {
  LayerNormWeights<T> norm1;
  LinearWeights<T> qkv;   // attn.qkv
  LinearWeights<T> proj;  // attn.proj
  LayerNormWeights<T> norm2;
  LinearWeights<T> fc1;  // mlp.fc1
  LinearWeights<T> fc2;  // mlp.fc2
};

// One parameter as a flat span, for code that does not care about shapes (optimizers, norms).
template <class T>
struct ParameterRef {
  std::string name;
  std::vector<Index> shape;
  std::span<T> values;  // contiguous, row-major
};

template <class T>
class ViTWeights {
 public:
  ViTConfig config;
  PatchEmbedWeights<T> patch_embed;
  Tensor<T, 3> cls_token;  // [1, 1, D]
  Tensor<T, 3> pos_embed;  // [1, T, D]
  std::vector<BlockWeights<T>> blocks;
  LayerNormWeights<T> norm;
  LinearWeights<T> head;

  ViTWeights() = default;

  // Every tensor allocated with its shape and filled with zeros (a gradient container). Validates
  // the config.
  explicit ViTWeights(const ViTConfig& cfg);

  // timm's initialisation, reproducible from `seed` on every platform (own normal sampler over
  // std::mt19937_64): Linear weights truncated normal (std 0.02, cut at 2 std), biases zero,
  // LayerNorm weight one and bias zero, pos_embed truncated normal (std 0.02), cls_token normal
  // (std 1e-6), patch embedding truncated normal with std sqrt(1 / (C*P*P)) (LeCun, as timm's jax
  // init; it keeps the embedded patches at unit scale).
  [[nodiscard]] static ViTWeights random(const ViTConfig& cfg, std::uint64_t seed);

  // Sets every parameter to zero (used to reset gradients).
  void set_zero();

  // Throws ShapeError naming the first tensor whose shape differs from what `config` implies.
  void check_shapes() const;

  // Throws ArgumentError naming the first tensor holding a NaN or an infinity.
  void check_finite() const;

  // Calls f(name, view) for every parameter in table order, where view is a TensorView<T, R> (const
  // T for the const overload) of the parameter's own rank R.
  template <class F>
  void for_each(F&& f);
  template <class F>
  void for_each(F&& f) const;

  // Every parameter as (name, shape, flat span), in table order.
  [[nodiscard]] std::vector<ParameterRef<T>> parameters();
  [[nodiscard]] std::vector<ParameterRef<const T>> parameters() const;

  // Total number of scalars (== config.parameter_count() when shapes are consistent).
  [[nodiscard]] std::int64_t size() const;

  // Converts every tensor to another scalar type (e.g. float weights to double for tests).
  template <class U>
  [[nodiscard]] ViTWeights<U> cast() const;
};

// ---------------------------------------------------------------------------------------------

namespace detail {

// Shapes a config implies, visited in table order: f(name, Shape<R>).
template <class F>
void for_each_expected_shape(const ViTConfig& c, F&& f) {
  const Index d = c.embed_dim;
  f(std::string("cls_token"), Shape<3>{1, 1, d});
  f(std::string("pos_embed"), Shape<3>{1, c.num_tokens(), d});
  f(std::string("patch_embed.proj.weight"), Shape<4>{d, c.in_channels, c.patch_size, c.patch_size});
  f(std::string("patch_embed.proj.bias"), Shape<1>{d});
  for (std::size_t i = 0; i < c.blocks.size(); ++i) {
    const BlockConfig& b = c.blocks[i];
    const std::string p = "blocks." + std::to_string(i) + ".";
    f(p + "norm1.weight", Shape<1>{d});
    f(p + "norm1.bias", Shape<1>{d});
    f(p + "attn.qkv.weight", Shape<2>{b.qkv_rows(), d});
    f(p + "attn.qkv.bias", Shape<1>{b.qkv_rows()});
    f(p + "attn.proj.weight", Shape<2>{d, b.v_dim()});
    f(p + "attn.proj.bias", Shape<1>{d});
    f(p + "norm2.weight", Shape<1>{d});
    f(p + "norm2.bias", Shape<1>{d});
    f(p + "mlp.fc1.weight", Shape<2>{b.mlp_hidden, d});
    f(p + "mlp.fc1.bias", Shape<1>{b.mlp_hidden});
    f(p + "mlp.fc2.weight", Shape<2>{d, b.mlp_hidden});
    f(p + "mlp.fc2.bias", Shape<1>{d});
  }
  f(std::string("norm.weight"), Shape<1>{d});
  f(std::string("norm.bias"), Shape<1>{d});
  f(std::string("head.weight"), Shape<2>{c.num_classes, d});
  f(std::string("head.bias"), Shape<1>{c.num_classes});
}

// The tensors of a ViTWeights (const or not) in table order: f(name, Tensor&).
template <class W, class F>
void for_each_tensor(W& w, F&& f) {
  f(std::string("cls_token"), w.cls_token);
  f(std::string("pos_embed"), w.pos_embed);
  f(std::string("patch_embed.proj.weight"), w.patch_embed.weight);
  f(std::string("patch_embed.proj.bias"), w.patch_embed.bias);
  for (std::size_t i = 0; i < w.blocks.size(); ++i) {
    auto& b = w.blocks[i];
    const std::string p = "blocks." + std::to_string(i) + ".";
    f(p + "norm1.weight", b.norm1.weight);
    f(p + "norm1.bias", b.norm1.bias);
    f(p + "attn.qkv.weight", b.qkv.weight);
    f(p + "attn.qkv.bias", b.qkv.bias);
    f(p + "attn.proj.weight", b.proj.weight);
    f(p + "attn.proj.bias", b.proj.bias);
    f(p + "norm2.weight", b.norm2.weight);
    f(p + "norm2.bias", b.norm2.bias);
    f(p + "mlp.fc1.weight", b.fc1.weight);
    f(p + "mlp.fc1.bias", b.fc1.bias);
    f(p + "mlp.fc2.weight", b.fc2.weight);
    f(p + "mlp.fc2.bias", b.fc2.bias);
  }
  f(std::string("norm.weight"), w.norm.weight);
  f(std::string("norm.bias"), w.norm.bias);
  f(std::string("head.weight"), w.head.weight);
  f(std::string("head.bias"), w.head.bias);
}

// Deterministic standard normal from a 64-bit engine (Box-Muller on 53-bit uniforms), so that a
// seed gives the same weights with every standard library.
class NormalSampler {
 public:
  explicit NormalSampler(std::uint64_t seed) : engine_(seed) {}
  double next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = uniform_open(), u2 = uniform_open();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 2.0 * 3.14159265358979323846 * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }
  // Normal with `std`, resampled until within `cut` standard deviations.
  double truncated(double std, double cut = 2.0) {
    for (;;) {
      const double z = next();
      if (std::abs(z) <= cut) return z * std;
    }
  }

 private:
  double uniform_open() {  // (0, 1]
    return (static_cast<double>(engine_() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  }
  std::mt19937_64 engine_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace detail

template <class T>
ViTWeights<T>::ViTWeights(const ViTConfig& cfg) : config(cfg) {
  config.validate();
  const Index d = config.embed_dim;
  cls_token = Tensor<T, 3>({1, 1, d});
  pos_embed = Tensor<T, 3>({1, config.num_tokens(), d});
  patch_embed.weight = Tensor<T, 4>({d, config.in_channels, config.patch_size, config.patch_size});
  patch_embed.bias = Tensor<T, 1>({d});
  blocks.resize(config.blocks.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const BlockConfig& bc = config.blocks[i];
    BlockWeights<T>& b = blocks[i];
    b.norm1 = {Tensor<T, 1>({d}), Tensor<T, 1>({d})};
    b.qkv = {Tensor<T, 2>({bc.qkv_rows(), d}), Tensor<T, 1>({bc.qkv_rows()})};
    b.proj = {Tensor<T, 2>({d, bc.v_dim()}), Tensor<T, 1>({d})};
    b.norm2 = {Tensor<T, 1>({d}), Tensor<T, 1>({d})};
    b.fc1 = {Tensor<T, 2>({bc.mlp_hidden, d}), Tensor<T, 1>({bc.mlp_hidden})};
    b.fc2 = {Tensor<T, 2>({d, bc.mlp_hidden}), Tensor<T, 1>({d})};
  }
  norm = {Tensor<T, 1>({d}), Tensor<T, 1>({d})};
  head = {Tensor<T, 2>({config.num_classes, d}), Tensor<T, 1>({config.num_classes})};
}

template <class T>
ViTWeights<T> ViTWeights<T>::random(const ViTConfig& cfg, std::uint64_t seed) {
  ViTWeights w(cfg);
  detail::NormalSampler rng(seed);
  const auto fill = [&](auto& tensor, double std, double cut) {
    for (T& v : tensor.span())
      v = static_cast<T>(cut > 0 ? rng.truncated(std, cut) : rng.next() * std);
  };
  fill(w.cls_token, 1e-6, 0.0);
  fill(w.pos_embed, 0.02, 2.0);
  fill(w.patch_embed.weight, std::sqrt(1.0 / static_cast<double>(cfg.patch_dim())), 2.0);
  const auto linear = [&](LinearWeights<T>& l) { fill(l.weight, 0.02, 2.0); };
  const auto layer_norm = [](LayerNormWeights<T>& n) { n.weight.fill(T(1)); };
  for (BlockWeights<T>& b : w.blocks) {
    layer_norm(b.norm1);
    linear(b.qkv);
    linear(b.proj);
    layer_norm(b.norm2);
    linear(b.fc1);
    linear(b.fc2);
  }
  layer_norm(w.norm);
  linear(w.head);
  return w;
}

template <class T>
void ViTWeights<T>::set_zero() {
  detail::for_each_tensor(*this, [](const std::string&, auto& t) { t.fill(T(0)); });
}

template <class T>
void ViTWeights<T>::check_shapes() const {
  config.validate();
  if (blocks.size() != config.blocks.size())
    VITC_THROW(ShapeError("ViTWeights: " + std::to_string(blocks.size()) +
                          " blocks of tensors for a config of depth " +
                          std::to_string(config.blocks.size())));
  std::vector<std::pair<std::string, std::vector<Index>>> expected;
  detail::for_each_expected_shape(config, [&](const std::string& name, const auto& shape) {
    expected.emplace_back(name, std::vector<Index>(shape.begin(), shape.end()));
  });
  std::size_t k = 0;
  detail::for_each_tensor(*this, [&](const std::string& name, const auto& t) {
    const std::vector<Index> got(t.shape().begin(), t.shape().end());
    const auto& want = expected[k++].second;
    if (got != want) {
      std::string g = "[", w = "[";
      for (std::size_t i = 0; i < got.size(); ++i) g += (i ? ", " : "") + std::to_string(got[i]);
      for (std::size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + std::to_string(want[i]);
      VITC_THROW(ShapeError(name + ": expected shape " + w + "], got " + g + "]"));
    }
  });
}

template <class T>
void ViTWeights<T>::check_finite() const {
  detail::for_each_tensor(*this, [](const std::string& name, const auto& t) {
    for (const T& v : t.span())
      if (!std::isfinite(static_cast<double>(v)))
        VITC_THROW(ArgumentError(name + ": contains a NaN or an infinity"));
  });
}

template <class T>
template <class F>
void ViTWeights<T>::for_each(F&& f) {
  detail::for_each_tensor(*this, [&](const std::string& name, auto& t) { f(name, t.view()); });
}

template <class T>
template <class F>
void ViTWeights<T>::for_each(F&& f) const {
  detail::for_each_tensor(*this,
                          [&](const std::string& name, const auto& t) { f(name, t.view()); });
}

template <class T>
std::vector<ParameterRef<T>> ViTWeights<T>::parameters() {
  std::vector<ParameterRef<T>> out;
  detail::for_each_tensor(*this, [&](const std::string& name, auto& t) {
    out.push_back({name, std::vector<Index>(t.shape().begin(), t.shape().end()), t.span()});
  });
  return out;
}

template <class T>
std::vector<ParameterRef<const T>> ViTWeights<T>::parameters() const {
  std::vector<ParameterRef<const T>> out;
  detail::for_each_tensor(*this, [&](const std::string& name, const auto& t) {
    out.push_back({name, std::vector<Index>(t.shape().begin(), t.shape().end()), t.span()});
  });
  return out;
}

template <class T>
std::int64_t ViTWeights<T>::size() const {
  std::int64_t n = 0;
  detail::for_each_tensor(*this, [&](const std::string&, const auto& t) { n += t.size(); });
  return n;
}

template <class T>
template <class U>
ViTWeights<U> ViTWeights<T>::cast() const {
  check_shapes();
  ViTWeights<U> out(config);
  std::vector<std::span<const T>> from;
  detail::for_each_tensor(*this,
                          [&](const std::string&, const auto& t) { from.push_back(t.span()); });
  std::size_t k = 0;
  detail::for_each_tensor(out, [&](const std::string& name, auto& t) {
    const std::span<const T> src = from[k++];
    if (static_cast<Index>(src.size()) != t.size())
      VITC_THROW(ShapeError(name + ": size differs from what the config implies"));
    for (std::size_t i = 0; i < src.size(); ++i) t.data()[i] = static_cast<U>(src[i]);
  });
  return out;
}

}  // namespace vitc::model
