#include "hub_fixture/tiny_gguf.hpp"

#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

namespace rbee::testing {
namespace {

// GGUF's value types (ggml's gguf.h).
enum GgufType : std::uint32_t {
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kString = 8,
  kArray = 9,
};
constexpr std::uint32_t kTensorF32 = 0;
constexpr std::uint64_t kAlignment = 32;  // general.alignment's default

// llama.cpp's token types.
constexpr std::int32_t kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6;

class Writer {
 public:
  std::string bytes;
  std::uint64_t keys = 0;  // metadata keys written

  template <typename T>
  void raw(T value) {
    bytes.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  void string(const std::string& text) {
    raw<std::uint64_t>(text.size());
    bytes += text;
  }
  void key(const std::string& name, GgufType type) {
    ++keys;
    string(name);
    raw<std::uint32_t>(type);
  }
  void u32(const std::string& name, std::uint32_t value) {
    key(name, kUint32);
    raw(value);
  }
  void f32(const std::string& name, float value) {
    key(name, kFloat32);
    raw(value);
  }
  void text(const std::string& name, const std::string& value) {
    key(name, kString);
    string(value);
  }
  void pad_to(std::uint64_t alignment) {
    while (bytes.size() % alignment != 0) bytes.push_back('\0');
  }
};

struct Tensor {
  std::string name;
  std::vector<std::uint64_t> dims;  // ne[0] first
  bool ones = false;                // a norm's weights
  std::uint64_t elements() const {
    std::uint64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

// The SentencePiece vocabulary llama.cpp's "llama" tokenizer needs: <unk>, <s>, </s>, the 256
// byte tokens it falls back to, and a few pieces.
struct Vocabulary {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
};

Vocabulary spm_vocabulary() {
  Vocabulary vocabulary;
  auto add = [&](std::string token, float score, std::int32_t type) {
    vocabulary.tokens.push_back(std::move(token));
    vocabulary.scores.push_back(score);
    vocabulary.types.push_back(type);
  };
  add("<unk>", 0, kUnknown);
  add("<s>", 0, kControl);
  add("</s>", 0, kControl);
  for (int byte = 0; byte < 256; ++byte) add(fmt::format("<0x{:02X}>", byte), 0, kByte);
  const std::string space = "\xE2\x96\x81";  // U+2581, SentencePiece's word boundary
  add(space, -1, kNormal);
  for (char c = 'a'; c <= 'z'; ++c) {
    add(std::string(1, c), -2, kNormal);
    add(space + c, -3, kNormal);
  }
  for (const char* word : {"hello", "world", "the", "model", "hive"})
    add(space + word, -4, kNormal);
  return vocabulary;
}

std::vector<Tensor> llama_tensors(const TinyLlamaShape& shape, std::uint64_t vocabulary) {
  const std::uint64_t e = shape.embedding, ff = shape.feed_forward;
  std::vector<Tensor> tensors = {{"token_embd.weight", {e, vocabulary}},
                                 {"output_norm.weight", {e}, true},
                                 {"output.weight", {e, vocabulary}}};
  for (std::uint32_t layer = 0; layer < shape.layers; ++layer) {
    const std::string block = fmt::format("blk.{}.", layer);
    tensors.push_back({block + "attn_norm.weight", {e}, true});
    tensors.push_back({block + "attn_q.weight", {e, e}});
    tensors.push_back({block + "attn_k.weight", {e, e}});
    tensors.push_back({block + "attn_v.weight", {e, e}});
    tensors.push_back({block + "attn_output.weight", {e, e}});
    tensors.push_back({block + "ffn_norm.weight", {e}, true});
    tensors.push_back({block + "ffn_gate.weight", {e, ff}});
    tensors.push_back({block + "ffn_up.weight", {e, ff}});
    tensors.push_back({block + "ffn_down.weight", {ff, e}});
  }
  return tensors;
}

void write_metadata(Writer& out, const TinyLlamaShape& shape, const Vocabulary& vocabulary) {
  out.text("general.architecture", "llama");
  out.text("general.name", "rbee tiny llama");
  out.u32("llama.context_length", shape.context);
  out.u32("llama.embedding_length", shape.embedding);
  out.u32("llama.block_count", shape.layers);
  out.u32("llama.feed_forward_length", shape.feed_forward);
  out.u32("llama.attention.head_count", shape.heads);
  out.u32("llama.attention.head_count_kv", shape.heads);
  out.u32("llama.rope.dimension_count", shape.embedding / shape.heads);
  out.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  out.text("tokenizer.ggml.model", "llama");
  out.key("tokenizer.ggml.tokens", kArray);
  out.raw<std::uint32_t>(kString);
  out.raw<std::uint64_t>(vocabulary.tokens.size());
  for (const auto& token : vocabulary.tokens) out.string(token);
  out.key("tokenizer.ggml.scores", kArray);
  out.raw<std::uint32_t>(kFloat32);
  out.raw<std::uint64_t>(vocabulary.scores.size());
  for (float score : vocabulary.scores) out.raw(score);
  out.key("tokenizer.ggml.token_type", kArray);
  out.raw<std::uint32_t>(kInt32);
  out.raw<std::uint64_t>(vocabulary.types.size());
  for (std::int32_t type : vocabulary.types) out.raw(type);
  out.u32("tokenizer.ggml.unknown_token_id", 0);
  out.u32("tokenizer.ggml.bos_token_id", 1);
  out.u32("tokenizer.ggml.eos_token_id", 2);
}

}  // namespace

std::string tiny_llama_gguf(const TinyLlamaShape& shape) {
  const Vocabulary vocabulary = spm_vocabulary();
  const auto tensors = llama_tensors(shape, vocabulary.tokens.size());
  Writer metadata;
  write_metadata(metadata, shape, vocabulary);
  Writer out;
  out.raw<std::uint32_t>(0x46554747);  // "GGUF"
  out.raw<std::uint32_t>(3);
  out.raw<std::uint64_t>(tensors.size());
  out.raw<std::uint64_t>(metadata.keys);
  out.bytes += metadata.bytes;
  std::uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    out.string(tensor.name);
    out.raw<std::uint32_t>(tensor.dims.size());
    for (auto dim : tensor.dims) out.raw<std::uint64_t>(dim);
    out.raw<std::uint32_t>(kTensorF32);
    out.raw<std::uint64_t>(offset);
    offset += (tensor.elements() * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
  }
  out.pad_to(kAlignment);
  std::mt19937_64 random(shape.seed);
  std::normal_distribution<float> weight(0.0f, 0.05f);
  for (const auto& tensor : tensors) {
    for (std::uint64_t i = 0; i < tensor.elements(); ++i) {
      out.raw<float>(tensor.ones ? 1.0f : weight(random));
    }
    out.pad_to(kAlignment);
  }
  return std::move(out.bytes);
}

}  // namespace rbee::testing
