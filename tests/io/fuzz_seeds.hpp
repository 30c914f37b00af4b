// SPDX-License-Identifier: Apache-2.0
#pragma once
// The seed corpus of the libFuzzer targets (tests/fuzz/corpus/{safetensors,idx}/): small valid
// files, and broken ones that each break one rule, so that the fuzzers start next to every check.
// test_fuzz_corpus.cpp compares the committed files with these; regenerate them with
//   VITC_REGENERATE_FUZZ_CORPUS=1 <build>/tests/test_io -tc='*fuzz seed corpus*'

#include <cstdint>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/io/safetensors.hpp"

namespace vitc_test {

enum class SeedKind {
  kValid,         // opens, and every tensor reads as its natural type
  kRejectOnOpen,  // from_buffer / read_idx_u8_buffer throws vitc::FormatError
  kRejectOnRead,  // opens, but reading some tensor throws vitc::FormatError
};

struct Seed {
  std::string file;
  SeedKind kind;
  Bytes bytes;
};

inline std::vector<Seed> safetensors_seeds() {
  using vitc::Tensor;
  using vitc::io::DType;
  using vitc::io::SafetensorsWriter;
  std::vector<Seed> seeds;
  auto add = [&](std::string file, SeedKind kind, Bytes bytes) {
    seeds.push_back({std::move(file), kind, std::move(bytes)});
  };

  {  // A tiny model-like file.
    SafetensorsWriter w;
    Tensor<float, 2> weight({3, 4});
    for (vitc::Index i = 0; i < weight.size(); ++i) weight.data()[i] = 0.5f * static_cast<float>(i);
    w.add("blocks.0.mlp.fc1.weight", weight);
    w.add("blocks.0.mlp.fc1.bias", Tensor<float, 1>({3}, -1.0f));
    w.add("head.weight.int8", Tensor<std::int8_t, 2>({2, 3}, -7));
    w.set_metadata("format", "pt");
    w.set_metadata("quant.scale", "0.0125");
    add("valid_model.safetensors", SeedKind::kValid, w.serialize());
  }
  {  // One tensor of every dtype, ranks 1 to 4.
    SafetensorsWriter w;
    int k = 0;
    for (DType d : vitc::io::kAllDTypes) {
      const std::vector<vitc::Index> shape =
          k % 4 == 0 ? std::vector<vitc::Index>{2}
                     : (k % 4 == 1 ? std::vector<vitc::Index>{1, 2}
                                   : (k % 4 == 2 ? std::vector<vitc::Index>{2, 1, 1}
                                                 : std::vector<vitc::Index>{1, 1, 2, 1}));
      Bytes data(2 * vitc::io::dtype_size(d));
      for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = static_cast<std::byte>(d == DType::kBool ? i % 2 : 0x3c + i);
      std::string name = std::to_string(k++);
      name.insert(0, 1, 't');  // (in steps: GCC 12 warns falsely on "t" + string)
      name += vitc::io::dtype_name(d);
      w.add_raw(name, d, shape, data);
    }
    add("valid_all_dtypes.safetensors", SeedKind::kValid, w.serialize());
  }
  {  // Half-precision storage, a scalar and empty tensors.
    SafetensorsWriter w;
    Tensor<float, 1> x({4});
    const float values[] = {1.0f, -65504.0f, 1e-8f, 3.0f};
    std::copy(std::begin(values), std::end(values), x.data());
    w.add_as_f16("h", x);
    w.add_as_bf16("b", x);
    const float one = 1.0f;
    w.add_raw("scalar", DType::kF32, {}, std::as_bytes(std::span(&one, 1)));
    w.add_raw("empty", DType::kI64, {0, 3}, {});
    add("valid_f16_scalar_empty.safetensors", SeedKind::kValid, w.serialize());
  }
  add("valid_empty.safetensors", SeedKind::kValid, SafetensorsWriter().serialize());
  add("valid_unpadded.safetensors", SeedKind::kValid,
      safetensors_file(R"( {"yy":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}} )", 4));
  add("valid_null_metadata.safetensors", SeedKind::kValid,
      safetensors_file(
          R"({"__metadata__":null,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1));

  const Bytes model = seeds.front().bytes;
  add("broken_truncated.safetensors", SeedKind::kRejectOnOpen,
      Bytes(model.begin(), model.end() - 1));
  add("broken_short.safetensors", SeedKind::kRejectOnOpen, Bytes(model.begin(), model.begin() + 5));
  {
    Bytes b = model;
    b[3] = std::byte{1};  // header length 2^24 + ..., past the end
    add("broken_header_length.safetensors", SeedKind::kRejectOnOpen, b);
  }
  const std::string f32 = R"("dtype":"F32","shape":[2],"data_offsets":)";
  add("broken_json.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8));
  add("broken_not_object.safetensors", SeedKind::kRejectOnOpen, safetensors_file("[0,8]", 0));
  add("broken_duplicate.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file("{\"a\":{" + f32 + "[0,8]},\"a\":{" + f32 + "[0,8]}}", 8));
  add("broken_overlap.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file("{\"a\":{" + f32 + "[0,8]},\"b\":{" + f32 + "[4,12]}}", 12));
  add("broken_gap.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file("{\"a\":{" + f32 + "[0,8]},\"b\":{" + f32 + "[12,20]}}", 20));
  add("broken_trailing.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file("{\"a\":{" + f32 + "[0,8]}}", 9));
  add("broken_size.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file("{\"a\":{" + f32 + "[0,4]}}", 4));
  add("broken_overflow.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file(
          R"({"a":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})",
          0));
  add("broken_dtype.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file(R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1));
  add("broken_negative.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1));
  add("broken_metadata.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file(R"({"__metadata__":{"k":1}})", 0));
  add("broken_utf8.safetensors", SeedKind::kRejectOnOpen,
      safetensors_file("{\"\xc3\x28\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                       1));
  add("broken_bool.safetensors", SeedKind::kRejectOnRead,
      safetensors_file(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})",
                       Bytes{std::byte{1}, std::byte{7}}));
  return seeds;
}

inline std::vector<Seed> idx_seeds() {
  std::vector<Seed> seeds;
  auto add = [&](std::string file, SeedKind kind, Bytes bytes) {
    seeds.push_back({std::move(file), kind, std::move(bytes)});
  };
  const Bytes images = idx_file(0x08, {2, 4, 4}, pattern_bytes(32, 11));
  add("valid_images.idx", SeedKind::kValid, images);
  add("valid_images.idx.gz", SeedKind::kValid, gzip(images));
  add("valid_labels.idx", SeedKind::kValid, idx_file(0x08, {5}, pattern_bytes(5, 12)));
  add("valid_rank2.idx", SeedKind::kValid, idx_file(0x08, {3, 2}, pattern_bytes(6, 13)));
  add("valid_rank4.idx", SeedKind::kValid, idx_file(0x08, {1, 2, 1, 3}, pattern_bytes(6, 14)));
  add("valid_empty.idx", SeedKind::kValid, idx_file(0x08, {0, 28}, {}));
  {
    Bytes two = gzip(Bytes(images.begin(), images.begin() + 10));
    append(two, gzip(Bytes(images.begin() + 10, images.end())));
    add("valid_two_members.idx.gz", SeedKind::kValid, two);
  }
  Bytes magic = images;
  magic[0] = std::byte{1};
  add("broken_magic.idx", SeedKind::kRejectOnOpen, magic);
  add("broken_type.idx", SeedKind::kRejectOnOpen, idx_file(0x0D, {2}, pattern_bytes(8)));
  add("broken_rank0.idx", SeedKind::kRejectOnOpen, idx_file(0x08, {}, {}));
  add("broken_short_data.idx", SeedKind::kRejectOnOpen, Bytes(images.begin(), images.end() - 3));
  {
    Bytes longer = images;
    longer.push_back(std::byte{0});
    add("broken_long_data.idx", SeedKind::kRejectOnOpen, longer);
  }
  add("broken_overflow.idx", SeedKind::kRejectOnOpen,
      idx_file(0x08, {0xffffffffu, 0xffffffffu, 0xffffffffu}, {}));
  {
    const Bytes gz = gzip(images);
    add("broken_truncated.idx.gz", SeedKind::kRejectOnOpen, Bytes(gz.begin(), gz.end() - 5));
    Bytes crc = gz;
    crc[crc.size() - 7] ^= std::byte{1};
    add("broken_crc.idx.gz", SeedKind::kRejectOnOpen, crc);
  }
  return seeds;
}

}  // namespace vitc_test
