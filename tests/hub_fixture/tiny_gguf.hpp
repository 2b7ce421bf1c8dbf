#pragma once
// A tiny but valid llama model in GGUF v3, for tests whose reader is a real llama.cpp: llama
// hyper-parameters, a SentencePiece vocabulary with byte-fallback tokens, F32 tensors of small
// deterministic values (so generation runs without NaNs). At the default shape it is well under
// 1 MiB; a wider embedding makes a few MiB (ranged downloads).

#include <cstdint>
#include <string>

namespace rbee::testing {

struct TinyLlamaShape {
  std::uint32_t embedding = 32;  // n_embd; a multiple of heads
  std::uint32_t heads = 4;
  std::uint32_t layers = 2;
  std::uint32_t feed_forward = 64;
  std::uint32_t context = 256;
  std::uint64_t seed = 7;
};

// The whole file.
std::string tiny_llama_gguf(const TinyLlamaShape& shape = {});

}  // namespace rbee::testing
