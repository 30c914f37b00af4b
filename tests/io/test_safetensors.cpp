// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "io_test_util.hpp"
#include "vitcompress/core/float16.hpp"
#include "vitcompress/io/safetensors.hpp"

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;
using vitc::io::DType;
using vitc::io::SafetensorsReader;
using vitc::io::SafetensorsWriter;
using vitc_test::Bytes;
using vitc_test::bytes_of;
using vitc_test::safetensors_file;
using vitc_test::string_of;

namespace {

// A small tensor of T with distinct, deterministic values (every bit pattern for floats would
// include NaNs, which compare unequal; bytes are compared instead).
template <class T, std::size_t Rank>
Tensor<T, Rank> sample_tensor(const vitc::Shape<Rank>& shape, std::uint32_t seed) {
  Tensor<T, Rank> t(shape);
  std::mt19937_64 rng(seed);
  for (Index i = 0; i < t.size(); ++i) {
    if constexpr (std::is_same_v<T, bool>) {
      t.data()[i] = (rng() & 1) != 0;
    } else {
      const std::uint64_t r = rng();
      std::memcpy(&t.data()[i], &r, sizeof(T));
    }
  }
  return t;
}

template <class T, std::size_t Rank>
bool same_bytes(const Tensor<T, Rank>& a, const Tensor<T, Rank>& b) {
  return a.shape() == b.shape() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(), a.bytes()) == 0);
}

template <class V>
concept CanBorrow = requires(V&& v) {
  SafetensorsReader::from_buffer(std::forward<V>(v));
};

std::string header_of(const Bytes& file) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(file[i]);
  return std::string(reinterpret_cast<const char*>(file.data() + 8), n);
}

// The FormatError message of opening `file`, checked to be one.
#define CHECK_REJECTS(file, substring)                                                    \
  CHECK_THROWS_WITH_AS(SafetensorsReader::from_bytes(file), doctest::Contains(substring), \
                       vitc::FormatError)

template <std::size_t Rank>
vitc::Shape<Rank> shape_for_rank();
template <>
vitc::Shape<1> shape_for_rank<1>() {
  return {7};
}
template <>
vitc::Shape<2> shape_for_rank<2>() {
  return {3, 5};
}
template <>
vitc::Shape<3> shape_for_rank<3>() {
  return {2, 3, 4};
}
template <>
vitc::Shape<4> shape_for_rank<4>() {
  return {2, 1, 3, 2};
}

template <class T, std::size_t Rank>
void round_trip_rank() {
  CAPTURE(Rank);
  const auto shape = shape_for_rank<Rank>();
  const auto t = sample_tensor<T, Rank>(shape, 17 + Rank);
  const vitc::Shape<Rank> zero_shape = [] {
    vitc::Shape<Rank> s = shape_for_rank<Rank>();
    s[Rank - 1] = 0;
    return s;
  }();
  SafetensorsWriter w;
  w.add("t", t);
  w.add("empty", Tensor<T, Rank>(zero_shape));
  const Bytes file = w.serialize();
  const auto r = SafetensorsReader::from_buffer(file);
  REQUIRE(r.tensors().size() == 2);
  CHECK(r.info("t").dtype == vitc::io::dtype_of<T>());
  CHECK(r.info("t").shape == std::vector<Index>(shape.begin(), shape.end()));
  CHECK(same_bytes(r.read<T, Rank>("t"), t));
  const auto v = r.view<T, Rank>("t");
  CHECK(v.shape() == shape);
  CHECK(static_cast<const void*>(v.data()) == static_cast<const void*>(r.info("t").bytes.data()));
  const auto e = r.read<T, Rank>("empty");
  CHECK(e.shape() == zero_shape);
  CHECK(e.empty());
  CHECK(r.info("empty").bytes.empty());
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("dtype names, sizes and C++ types") {
    for (DType d : vitc::io::kAllDTypes) {
      CAPTURE(vitc::io::dtype_name(d));
      CHECK(vitc::io::parse_dtype(vitc::io::dtype_name(d)) == d);
    }
    CHECK(vitc::io::dtype_name(DType::kBF16) == "BF16");
    CHECK(vitc::io::dtype_size(DType::kBool) == 1);
    CHECK(vitc::io::dtype_size(DType::kF16) == 2);
    CHECK(vitc::io::dtype_size(DType::kU32) == 4);
    CHECK(vitc::io::dtype_size(DType::kI64) == 8);
    CHECK_THROWS_WITH_AS(vitc::io::parse_dtype("f32"), "unknown dtype 'f32'", vitc::FormatError);
    CHECK_THROWS_AS(vitc::io::parse_dtype("F8_E4M3"), vitc::FormatError);
    static_assert(vitc::io::dtype_of<float>() == DType::kF32);
    static_assert(vitc::io::dtype_of<const double>() == DType::kF64);
    static_assert(vitc::io::dtype_of<std::int8_t>() == DType::kI8);
    static_assert(vitc::io::dtype_of<std::uint16_t>() == DType::kU16);
    static_assert(vitc::io::dtype_of<std::int64_t>() == DType::kI64);
    static_assert(vitc::io::dtype_of<long long>() == DType::kI64);
    static_assert(vitc::io::dtype_of<bool>() == DType::kBool);
  }

  TEST_CASE_TEMPLATE("every dtype round-trips at ranks 1 to 4, with empty tensors", T, bool,
                     std::uint8_t, std::int8_t, std::int16_t, std::uint16_t, std::int32_t,
                     std::uint32_t, float, double, std::int64_t, std::uint64_t) {
    round_trip_rank<T, 1>();
    round_trip_rank<T, 2>();
    round_trip_rank<T, 3>();
    round_trip_rank<T, 4>();
  }

  TEST_CASE("the writer produces the reference implementation's bytes") {
    // Expected bytes from the reference's own tests (safetensors/src/tensor.rs:
    // test_serialization, test_serialization_forced_alignement, test_empty).
    Tensor<float, 3> t({1, 2, 3});
    for (int i = 0; i < 6; ++i) t.data()[i] = static_cast<float>(i);
    SafetensorsWriter w;
    w.add("attn.0", t);
    Bytes expected;
    vitc_test::append_le64(expected, 64);
    vitc_test::append(
        expected, bytes_of(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})"));
    for (float f : {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f})
      for (int k = 0; k < 4; ++k)
        expected.push_back(
            static_cast<std::byte>((std::bit_cast<std::uint32_t>(f) >> (8 * k)) & 0xffu));
    CHECK(w.serialize() == expected);

    // A shorter name: the header is padded with spaces to 72 bytes.
    SafetensorsWriter w2;
    w2.add("attn0", t.view().reshape<4>({1, 1, 2, 3}));
    const Bytes out2 = w2.serialize();
    CHECK(out2[0] == std::byte{72});
    CHECK(header_of(out2) ==
          R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       )");
    CHECK(out2.size() == 8 + 72 + 24);

    SafetensorsWriter empty;
    CHECK(string_of(empty.serialize()) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
    empty.set_metadata("framework", "pt");
    const Bytes with_meta = empty.serialize();
    CHECK(with_meta[0] == std::byte{40});
    CHECK(header_of(with_meta) == R"({"__metadata__":{"framework":"pt"}}     )");
  }

  TEST_CASE("written files: header size, padding, order, offsets, checked by hand") {
    SafetensorsWriter w;
    w.add("b", Tensor<std::int8_t, 1>({3}, 1));
    w.add("a", Tensor<float, 1>({2}, 1.0f));
    w.add("c", Tensor<double, 1>({1}, 2.0));
    w.add("a2", Tensor<float, 2>({1, 1}, 3.0f));
    w.add("z", Tensor<bool, 1>({2}, true));
    w.add("e", Tensor<std::uint64_t, 1>({1}, 7));
    w.add_as_f16("h", Tensor<float, 1>({2}, 1.0f));
    w.set_metadata("format", "pt");
    w.set_metadata("a key", "line\nbreak \"quoted\" \\ \x01");
    const Bytes file = w.serialize();
    const std::string header = header_of(file);
    // Descending dtype alignment (U64 > F64 > F32 > F16 > I8 > BOOL), then name.
    const std::string expected_json =
        R"({"__metadata__":{"a key":"line\nbreak \"quoted\" \\ \u0001","format":"pt"},)"
        R"("e":{"dtype":"U64","shape":[1],"data_offsets":[0,8]},)"
        R"("c":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
        R"("a":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
        R"("a2":{"dtype":"F32","shape":[1,1],"data_offsets":[24,28]},)"
        R"("h":{"dtype":"F16","shape":[2],"data_offsets":[28,32]},)"
        R"("b":{"dtype":"I8","shape":[3],"data_offsets":[32,35]},)"
        R"("z":{"dtype":"BOOL","shape":[2],"data_offsets":[35,37]}})";
    CHECK(header.size() % 8 == 0);
    CHECK(header.size() - expected_json.size() < 8);
    CHECK(header.substr(0, expected_json.size()) == expected_json);
    CHECK(header.find_first_not_of(' ', expected_json.size()) == std::string::npos);
    CHECK(file.size() == 8 + header.size() + 37);
    const std::byte* data = file.data() + 8 + header.size();
    CHECK(data[0] == std::byte{7});  // U64 7, little-endian
    CHECK(data[7] == std::byte{0});
    CHECK(std::memcmp(data + 16, "\x00\x00\x80\x3f", 4) == 0);  // F32 1.0
    CHECK(std::memcmp(data + 28, "\x00\x3c\x00\x3c", 4) == 0);  // F16 1.0, 1.0
    CHECK(std::memcmp(data + 32, "\x01\x01\x01\x01\x01", 5) == 0);

    const auto r = SafetensorsReader::from_buffer(file);
    CHECK(r.metadata().at("a key") == "line\nbreak \"quoted\" \\ \x01");
    CHECK(r.metadata().at("format") == "pt");
    std::vector<std::string> names;
    for (const auto& t : r.tensors()) names.push_back(t.name);
    CHECK(names == std::vector<std::string>{"e", "c", "a", "a2", "h", "b", "z"});
    CHECK(r.read<std::int8_t, 1>("b")(2) == 1);
    CHECK(r.read<bool, 1>("z")(1));
  }

  TEST_CASE("metadata: absent, null, empty, unicode") {
    CHECK(SafetensorsReader::from_bytes(safetensors_file("{}", 0)).metadata().empty());
    CHECK(SafetensorsReader::from_bytes(safetensors_file(R"({"__metadata__":null})", 0))
              .metadata()
              .empty());
    CHECK(SafetensorsReader::from_bytes(safetensors_file(R"({"__metadata__":{}})", 0))
              .metadata()
              .empty());
    SafetensorsWriter w;
    w.set_metadata("quant.scale", "0.125");
    w.set_metadata("名前", "值 ✓");
    w.set_metadata("quant.scale", "0.25");  // replaces
    const auto r = SafetensorsReader::from_bytes(w.serialize());
    CHECK(r.metadata().size() == 2);
    CHECK(r.metadata().at("quant.scale") == "0.25");
    CHECK(r.metadata().at("名前") == "值 ✓");
    CHECK(r.tensors().empty());
  }

  TEST_CASE("strided and transposed views are written in row-major order") {
    Tensor<std::int32_t, 2> m({3, 4});
    for (Index i = 0; i < 12; ++i) m.data()[i] = static_cast<std::int32_t>(i);
    SafetensorsWriter w;
    w.add("transposed", m.view().transposed());
    w.add("columns", m.view().slice(1, 1, 3));
    w.add("mutable", m.view().slice(0, 2, 3));  // a view of non-const data
    w.add_as_bf16("t16", Tensor<float, 2>({2, 2}, 1.5f).view().transposed());
    const auto r = SafetensorsReader::from_bytes(w.serialize());
    const auto t = r.read<std::int32_t, 2>("transposed");
    REQUIRE(t.shape() == vitc::Shape<2>{4, 3});
    for (Index i = 0; i < 4; ++i)
      for (Index j = 0; j < 3; ++j) CHECK(t(i, j) == m(j, i));
    const auto c = r.read<std::int32_t, 2>("columns");
    REQUIRE(c.shape() == vitc::Shape<2>{3, 2});
    for (Index i = 0; i < 3; ++i)
      for (Index j = 0; j < 2; ++j) CHECK(c(i, j) == m(i, j + 1));
    const auto row = r.read<std::int32_t, 2>("mutable");
    CHECK(row.shape() == vitc::Shape<2>{1, 4});
    CHECK(row(0, 3) == 11);
    CHECK(r.read<float, 2>("t16")(1, 0) == 1.5f);
  }

  TEST_CASE("F16 and BF16 read into float exactly; F32 reads into double") {
    Tensor<float, 1> x({6});
    const float values[] = {1.0f, -2.5f, 65504.0f, 1e-7f, 3.14159265f, -0.0f};
    std::copy(std::begin(values), std::end(values), x.data());
    SafetensorsWriter w;
    w.add_as_f16("h", x);
    w.add_as_bf16("b", x.view());
    w.add("f", x);
    const auto r = SafetensorsReader::from_bytes(w.serialize());
    CHECK(r.info("h").dtype == DType::kF16);
    CHECK(r.info("b").dtype == DType::kBF16);
    const auto h = r.read<float, 1>("h");
    const auto b = r.read<float, 1>("b");
    const auto d = r.read<double, 1>("f");
    for (Index i = 0; i < 6; ++i) {
      CAPTURE(values[i]);
      CHECK(h(i) == vitc::half_bits_to_float(vitc::float_to_half_bits(values[i])));
      CHECK(b(i) == vitc::bf16_bits_to_float(vitc::float_to_bf16_bits(values[i])));
      CHECK(d(i) == static_cast<double>(values[i]));
    }
    CHECK(h(2) == 65504.0f);
    CHECK(std::signbit(h(5)));
    CHECK(b(3) != 0.0f);  // bfloat16 has float's range
    // Exact dtypes only for anything else, and for views.
    CHECK_THROWS_WITH_AS(((void)r.read<double, 1>("h")),
                         doctest::Contains("tensor 'h' has dtype F16, expected F64 or F32"),
                         vitc::FormatError);
    CHECK_THROWS_WITH_AS(((void)r.read<std::uint16_t, 1>("h")),
                         doctest::Contains("tensor 'h' has dtype F16, expected U16"),
                         vitc::FormatError);
    CHECK_THROWS_WITH_AS(((void)r.view<float, 1>("h")),
                         doctest::Contains("tensor 'h' has dtype F16, expected F32"),
                         vitc::FormatError);
    CHECK_THROWS_WITH_AS(((void)r.read<float, 2>("f")),
                         doctest::Contains("tensor 'f' has shape [6] (rank 1), expected rank 2"),
                         vitc::ShapeError);
    CHECK_THROWS_WITH_AS(((void)r.read<float, 1>("missing")),
                         "safetensors buffer: tensor 'missing' not found", vitc::FormatError);
    CHECK_FALSE(r.contains("missing"));
    CHECK(r.contains("h"));
  }

  TEST_CASE("view() is zero-copy and refuses misaligned data; read() copies it regardless") {
    SafetensorsWriter w;
    Tensor<float, 1> x({4});
    for (int i = 0; i < 4; ++i) x.data()[i] = static_cast<float>(i) + 0.5f;
    w.add("x", x);
    const Bytes file = w.serialize();
    // Shift the whole file by one byte in memory: the offsets stay valid, the address does not.
    alignas(64) std::byte storage[256];
    REQUIRE(file.size() + 1 <= sizeof storage);
    std::memcpy(storage + 1, file.data(), file.size());
    const auto shifted = SafetensorsReader::from_buffer({storage + 1, file.size()});
    CHECK_THROWS_WITH_AS(((void)shifted.view<float, 1>("x")),
                         doctest::Contains("tensor 'x' is not aligned to 4 bytes"),
                         vitc::FormatError);
    CHECK(shifted.read<float, 1>("x")(3) == 3.5f);
    std::memcpy(storage, file.data(), file.size());
    const auto aligned = SafetensorsReader::from_buffer({storage, file.size()});
    const auto v = aligned.view<float, 1>("x");
    CHECK(static_cast<const void*>(v.data()) ==
          static_cast<const void*>(storage + file.size() - 16));
    CHECK(v(2) == 2.5f);
    // A valid but unpadded header (N = 61) puts the data at an odd offset.
    const std::string h = R"({"yy":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}})";
    CHECK(h.size() % 2 == 1);
    const auto odd = SafetensorsReader::from_bytes(safetensors_file(h, 4));
    CHECK_THROWS_WITH_AS(((void)odd.view<std::int16_t, 1>("yy")),
                         doctest::Contains("tensor 'yy' is not aligned to 2 bytes"),
                         vitc::FormatError);
    CHECK(odd.read<std::int16_t, 1>("yy").size() == 2);
    CHECK_THROWS_WITH_AS(((void)odd.view<std::uint8_t, 1>("yy")),
                         doctest::Contains("tensor 'yy' has dtype I16, expected U8"),
                         vitc::FormatError);
  }

  TEST_CASE("scalars (shape []) and zero-size tensors") {
    SafetensorsWriter w;
    const float pi = 3.25f;
    w.add_raw("scalar", DType::kF32, {}, std::as_bytes(std::span(&pi, 1)));
    w.add_raw("none", DType::kI32, {0}, {});
    w.add_raw("wide_empty", DType::kF64, {4, 0, 1000000}, {});
    const auto r = SafetensorsReader::from_bytes(w.serialize());
    const auto& s = r.info("scalar");
    CHECK(s.shape.empty());
    CHECK(s.element_count() == 1);
    REQUIRE(s.bytes.size() == 4);
    float back = 0;
    std::memcpy(&back, s.bytes.data(), 4);
    CHECK(back == pi);
    CHECK_THROWS_AS(((void)r.read<float, 1>("scalar")), vitc::ShapeError);
    CHECK(r.read<std::int32_t, 1>("none").empty());
    CHECK(r.read<double, 3>("wide_empty").shape() == vitc::Shape<3>{4, 0, 1000000});
    CHECK(r.view<double, 3>("wide_empty").empty());
    // Two empty tensors at the same offset, and a hand-written file of only empty tensors.
    const auto two = SafetensorsReader::from_bytes(
        safetensors_file(R"({"p":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                         R"("o":{"dtype":"U8","shape":[0,3],"data_offsets":[0,0]}})",
                         0));
    REQUIRE(two.tensors().size() == 2);
    CHECK(two.tensors()[0].name == "o");  // equal offsets: by name
  }

  TEST_CASE("file order is data order, whatever the JSON key order") {
    const auto r = SafetensorsReader::from_bytes(
        safetensors_file(R"({"first_key":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
                         R"("second_key":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                         6));
    REQUIRE(r.tensors().size() == 2);
    CHECK(r.tensors()[0].name == "second_key");
    CHECK(r.tensors()[1].name == "first_key");
    CHECK(r.read<std::uint8_t, 1>("first_key")(0) == static_cast<std::uint8_t>(4 * 7 + 1));
  }

  TEST_CASE("the header may carry leading and trailing whitespace") {
    const auto r = SafetensorsReader::from_bytes(safetensors_file(
        "  {\"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}\n   ", 1));
    CHECK(r.tensors().size() == 1);
  }

  TEST_CASE("validation: sizes of the file and the header") {
    for (std::size_t n = 0; n < 8; ++n) {
      CAPTURE(n);
      CHECK_REJECTS(Bytes(n), "shorter than 8 bytes");
    }
    CHECK_REJECTS(safetensors_file("", 0), "header length is 0");
    Bytes huge;
    vitc_test::append_le64(huge, 100'000'001);
    vitc_test::append(huge, bytes_of("{}"));
    CHECK_REJECTS(huge, "header length 100000001 exceeds the limit of 100000000 bytes");
    Bytes max;
    vitc_test::append_le64(max, ~std::uint64_t{0});
    CHECK_REJECTS(max, "exceeds the limit");
    Bytes past;
    vitc_test::append_le64(past, 100);
    vitc_test::append(past, bytes_of("{}      "));
    CHECK_REJECTS(past, "header length 100 runs past the end of the file (16 bytes)");
  }

  TEST_CASE("validation: the header must be UTF-8 JSON, one object, without duplicate keys") {
    CHECK_REJECTS(safetensors_file("{\"a\xff\":{}}", 0), "header is not valid UTF-8");
    CHECK_REJECTS(safetensors_file("{\"\xc0\xaf\":1}", 0), "not valid UTF-8");      // overlong
    CHECK_REJECTS(safetensors_file("{\"\xed\xa0\x80\":1}", 0), "not valid UTF-8");  // surrogate
    CHECK_REJECTS(safetensors_file(R"({"a":)", 0), "header is not valid JSON");
    CHECK_REJECTS(safetensors_file(std::string_view("{}\0\0", 4), 0), "header contains a NUL byte");
    CHECK_REJECTS(safetensors_file(std::string_view("{\"a\0\":1}", 8), 0), "NUL byte");
    CHECK_REJECTS(safetensors_file("\xEF\xBB\xBF{}", 0),
                  "header starts with a UTF-8 byte-order mark");
    CHECK_REJECTS(safetensors_file(R"({"a":1} {})", 0), "header is not valid JSON");
    CHECK_REJECTS(safetensors_file(R"({"a":"\ud800"})", 0), "header is not valid JSON");
    CHECK_REJECTS(safetensors_file("[1,2]", 0), "header is not a JSON object (found array)");
    CHECK_REJECTS(safetensors_file("\"x\"", 0), "header is not a JSON object");
    const std::string entry = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
    CHECK_REJECTS(safetensors_file("{\"w\":" + entry + ",\"w\":" + entry + "}", 1),
                  "duplicate key 'w' in the header");
    CHECK_REJECTS(safetensors_file(
                      R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1),
                  "duplicate key 'dtype'");
    CHECK_REJECTS(safetensors_file(R"({"__metadata__":{"k":"a","k":"b"}})", 0),
                  "duplicate key 'k'");
  }

  TEST_CASE("validation: tensor entries have exactly dtype, shape and data_offsets") {
    CHECK_REJECTS(safetensors_file(R"({"w":3})", 0),
                  "tensor 'w' is not a JSON object (found number)");
    CHECK_REJECTS(safetensors_file(R"({"w":{"dtype":"U8","data_offsets":[0,0]}})", 0),
                  "tensor 'w': missing field 'shape'");
    CHECK_REJECTS(safetensors_file(R"({"w":{"shape":[0],"data_offsets":[0,0]}})", 0),
                  "tensor 'w': missing field 'dtype'");
    CHECK_REJECTS(safetensors_file(R"({"w":{"dtype":"U8","shape":[0]}})", 0),
                  "tensor 'w': missing field 'data_offsets'");
    CHECK_REJECTS(
        safetensors_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"offsets":[0,0]}})",
                         0),
        "tensor 'w': unexpected field 'offsets'");
    CHECK_REJECTS(safetensors_file(R"({"w":{"dtype":8,"shape":[0],"data_offsets":[0,0]}})", 0),
                  "tensor 'w': dtype is not a string");
    CHECK_REJECTS(
        safetensors_file(R"({"w":{"dtype":"F8_E4M3","shape":[0],"data_offsets":[0,0]}})", 0),
        "tensor 'w': unknown dtype \"F8_E4M3\"");
    CHECK_REJECTS(safetensors_file(R"({"w":{"dtype":"u8","shape":[0],"data_offsets":[0,0]}})", 0),
                  "unknown dtype");
  }

  TEST_CASE("validation: shapes are arrays of non-negative integers whose size cannot overflow") {
    auto with_shape = [](const std::string& shape) {
      return safetensors_file(
          R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})", 0);
    };
    CHECK_REJECTS(with_shape("3"), "tensor 'w': shape is not an array");
    CHECK_REJECTS(with_shape("[2,-1]"), "tensor 'w': shape[1] is negative (-1)");
    CHECK_REJECTS(with_shape("[2.5]"), "tensor 'w': shape[0] is not an integer (found number 2.5)");
    CHECK_REJECTS(with_shape("[2.0]"), "shape[0] is not an integer");
    CHECK_REJECTS(with_shape("[1e2]"), "shape[0] is not an integer");
    CHECK_REJECTS(with_shape("[\"2\"]"), "shape[0] is not an integer (found string)");
    CHECK_REJECTS(with_shape("[null]"), "shape[0] is not an integer");
    CHECK_REJECTS(with_shape("[18446744073709551616]"), "shape[0] is not an integer");
    CHECK_REJECTS(with_shape("[9223372036854775808]"),
                  "tensor 'w': shape[0] = 9223372036854775808 does not fit a signed 64-bit index");
    CHECK_REJECTS(with_shape("[4611686018427387904,4611686018427387904]"),
                  "tensor 'w': shape [4611686018427387904, 4611686018427387904] of F32 overflows");
    CHECK_REJECTS(with_shape("[4611686018427387904]"), "overflows");  // 2^62 * 4 bytes
    CHECK_REJECTS(with_shape("[0,4294967296,4294967296]"), "overflows");
    CHECK_REJECTS(with_shape("[4294967296,4294967296,0]"), "overflows");
    // A huge extent next to a zero one is a valid empty tensor.
    const auto r = SafetensorsReader::from_bytes(with_shape("[0,4611686018427387904]"));
    CHECK(r.read<float, 2>("w").shape() == vitc::Shape<2>{0, 4611686018427387904});
  }

  TEST_CASE("validation: data_offsets match the byte size and tile the data area exactly") {
    auto one = [](const std::string& offsets, std::size_t data) {
      return safetensors_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":)" + offsets + "}}",
                              data);
    };
    CHECK(SafetensorsReader::from_bytes(one("[0,12]", 12)).tensors().size() == 1);
    CHECK_REJECTS(one("[0]", 12), "tensor 'w': data_offsets is not an array of two integers");
    CHECK_REJECTS(one("[0,12,12]", 12), "data_offsets is not an array of two integers");
    CHECK_REJECTS(one("{\"a\":0}", 12), "data_offsets is not an array");
    CHECK_REJECTS(one("[0,-12]", 12), "tensor 'w': data_offsets[1] is negative");
    CHECK_REJECTS(one("[0.0,12]", 12), "tensor 'w': data_offsets[0] is not an integer");
    CHECK_REJECTS(one("[12,0]", 12), "tensor 'w': data_offsets [12, 0] end before they begin");
    CHECK_REJECTS(
        one("[0,8]", 8),
        "tensor 'w': data_offsets [0, 8] hold 8 bytes, but dtype F32 and shape [3] need 12");
    CHECK_REJECTS(one("[4,16]", 12),
                  "tensor 'w': data_offsets [4, 16] lie outside the data area of 12 bytes");
    CHECK_REJECTS(one("[18446744073709551604,18446744073709551615]", 12), "hold 11 bytes");
    CHECK_REJECTS(one("[18446744073709551600,18446744073709551612]", 12), "lie outside");
    CHECK_REJECTS(one("[0,12]", 16), "4 bytes after the last tensor 'w' are not covered");
    CHECK_REJECTS(safetensors_file("{}", 3), "3 bytes after the last tensor are not covered");
    CHECK_REJECTS(one("[4,16]", 16), "gap of 4 bytes in the data area before tensor 'w'");

    const std::string a = R"("a":{"dtype":"U8","shape":[8],"data_offsets":)";
    const std::string b = R"("b":{"dtype":"U8","shape":[8],"data_offsets":)";
    CHECK_REJECTS(safetensors_file("{" + a + "[0,8]}," + b + "[4,12]}}", 12),
                  "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a'");
    CHECK_REJECTS(safetensors_file("{" + a + "[0,8]}," + b + "[0,8]}}", 8), "overlaps tensor 'a'");
    CHECK_REJECTS(safetensors_file("{" + a + "[0,8]}," + b + "[10,18]}}", 18),
                  "gap of 2 bytes in the data area before tensor 'b'");
    CHECK(SafetensorsReader::from_bytes(safetensors_file("{" + a + "[8,16]}," + b + "[0,8]}}", 16))
              .tensors()
              .size() == 2);
  }

  TEST_CASE("validation: __metadata__ is an object of strings") {
    CHECK_REJECTS(safetensors_file(R"({"__metadata__":[1]})", 0),
                  "__metadata__ is not a JSON object (found array)");
    CHECK_REJECTS(safetensors_file(R"({"__metadata__":"x"})", 0),
                  "__metadata__ is not a JSON object");
    CHECK_REJECTS(safetensors_file(R"({"__metadata__":{"k":1}})", 0),
                  "__metadata__ field 'k' is not a string (found number)");
    CHECK_REJECTS(safetensors_file(R"({"__metadata__":{"k":{"n":"v"}}})", 0),
                  "__metadata__ field 'k' is not a string");
  }

  TEST_CASE("validation: BOOL bytes other than 0 and 1 are refused when read as bool") {
    const Bytes data{std::byte{1}, std::byte{0}, std::byte{2}};
    const auto r = SafetensorsReader::from_bytes(
        safetensors_file(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", data));
    CHECK_THROWS_WITH_AS(((void)r.read<bool, 1>("m")),
                         doctest::Contains("tensor 'm' (BOOL) holds the byte 2 at element 2"),
                         vitc::FormatError);
    CHECK_THROWS_AS(((void)r.view<bool, 1>("m")), vitc::FormatError);
    CHECK(r.info("m").bytes.size() == 3);  // the raw bytes are still available
  }

  TEST_CASE("the writer validates its input") {
    SafetensorsWriter w;
    w.add("x", Tensor<float, 1>({2}));
    CHECK_THROWS_WITH_AS(w.add("x", Tensor<float, 1>({2})),
                         "safetensors writer: duplicate tensor name 'x'", vitc::ArgumentError);
    CHECK_THROWS_WITH_AS(w.add_as_f16("x", Tensor<float, 1>({2})),
                         doctest::Contains("duplicate tensor name 'x'"), vitc::ArgumentError);
    CHECK_THROWS_AS(w.add("__metadata__", Tensor<float, 1>({2})), vitc::ArgumentError);
    CHECK_THROWS_WITH_AS(w.add(std::string("bad\xff"), Tensor<float, 1>({2})),
                         doctest::Contains("is not valid UTF-8"), vitc::ArgumentError);
    const Bytes six(6);
    CHECK_THROWS_WITH_AS(
        w.add_raw("r", DType::kF32, {2}, six),
        "safetensors writer: tensor 'r': 6 bytes given, but F32 of shape [2] needs 8",
        vitc::ArgumentError);
    CHECK_THROWS_WITH_AS(w.add_raw("r", DType::kF32, {-2}, {}),
                         doctest::Contains("tensor 'r': negative extent in shape [-2]"),
                         vitc::ArgumentError);
    CHECK_THROWS_WITH_AS(w.add_raw("r", DType::kU8, {1 << 30, 1 << 30, 1 << 30}, {}),
                         doctest::Contains("needs more than 2^63"), vitc::ArgumentError);
    CHECK_THROWS_AS(w.set_metadata("k", "\xc3"), vitc::ArgumentError);
    CHECK(w.size() == 1);  // failed calls added nothing
    CHECK_FALSE(w.contains("r"));
    // Names the JSON must escape survive.
    w.add("quote\"back\\slash\tname", Tensor<std::uint8_t, 1>({1}, 9));
    const auto r = SafetensorsReader::from_bytes(w.serialize());
    CHECK(r.read<std::uint8_t, 1>("quote\"back\\slash\tname")(0) == 9);
  }

  TEST_CASE("readers own or borrow their bytes and can be moved") {
    SafetensorsWriter w;
    w.add("v", Tensor<std::int16_t, 1>({3}, -4));
    auto owned = SafetensorsReader::from_bytes(w.serialize());
    SafetensorsReader moved = std::move(owned);
    CHECK(moved.read<std::int16_t, 1>("v")(2) == -4);
    CHECK(moved.view<std::int16_t, 1>("v")(0) == -4);
    static_assert(!std::is_copy_constructible_v<SafetensorsReader>);
    // Borrowing a temporary would dangle; from_buffer refuses it at compile time.
    static_assert(CanBorrow<Bytes&> && CanBorrow<const Bytes&>);
    static_assert(!CanBorrow<Bytes>);
    static_assert(std::is_nothrow_move_constructible_v<SafetensorsReader>);
  }

  TEST_CASE("files: write atomically, memory-map on open, IoError naming the path") {
    vitc_test::ScratchDir dir("safetensors");
    const auto path = dir / "model.safetensors";
    SafetensorsWriter w;
    Tensor<float, 2> weight({16, 8});
    for (Index i = 0; i < weight.size(); ++i) weight.data()[i] = 0.25f * static_cast<float>(i);
    w.add("blocks.0.attn.qkv.weight", weight);
    w.add("blocks.0.attn.qkv.bias", Tensor<float, 1>({16}, -1.0f));
    w.set_metadata("vitc.version", "1");
    w.write(path);
    CHECK(vitc_test::read_file(path) == w.serialize());

    const auto r = SafetensorsReader::open(path);
    CHECK(r.source() == "safetensors file '" + path.string() + "'");
    const auto v = r.view<float, 2>("blocks.0.attn.qkv.weight");  // the mapping is page-aligned
    CHECK(v(15, 7) == weight(15, 7));
    CHECK(r.read<float, 1>("blocks.0.attn.qkv.bias")(3) == -1.0f);
    CHECK(r.metadata().at("vitc.version") == "1");

    // Overwrite the existing file; no temporary file is left behind.
    SafetensorsWriter w2;
    w2.add("only", Tensor<std::uint8_t, 1>({1}, 5));
    w2.write(path);
    CHECK(SafetensorsReader::open(path).tensors().size() == 1);
    CHECK(r.view<float, 2>("blocks.0.attn.qkv.weight")(15, 7) == weight(15, 7));  // old mapping
    int files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
      (void)entry;
      ++files;
    }
    CHECK(files == 1);

    const auto missing = dir / "no-such.safetensors";
    CHECK_THROWS_WITH_AS(SafetensorsReader::open(missing),
                         doctest::Contains(("cannot open safetensors file '" + missing.string() +
                                            "': No such file or directory")
                                               .c_str()),
                         vitc::IoError);
    CHECK_THROWS_WITH_AS(SafetensorsReader::open(dir.path()),
                         doctest::Contains("not a regular file"), vitc::IoError);
    const auto bad_dir = dir / "no-such-dir" / "m.safetensors";
    CHECK_THROWS_WITH_AS(
        w.write(bad_dir),
        doctest::Contains(("cannot write safetensors file '" + bad_dir.string()).c_str()),
        vitc::IoError);

    // A broken file on disk names the path and the tensor.
    const auto broken = dir / "broken.safetensors";
    vitc_test::write_file(
        broken, safetensors_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
    CHECK_THROWS_WITH_AS(
        SafetensorsReader::open(broken),
        doctest::Contains(("safetensors file '" + broken.string() + "': tensor 'w'").c_str()),
        vitc::FormatError);
    const auto empty = dir / "empty.safetensors";
    vitc_test::write_file(empty, {});
    CHECK_THROWS_WITH_AS(SafetensorsReader::open(empty), doctest::Contains("shorter than 8 bytes"),
                         vitc::FormatError);
  }
}
