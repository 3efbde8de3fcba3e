// WordCache: thread-safe memo of word -> token ids for the BPE tokenizers. Text repeats its words,
// so most words skip the merge loop. Sharded so concurrent encodes rarely share a lock; a shard
// that fills up is cleared (cheap, and the hot words come straight back).
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kiln/tokenizer/vocab.h"

namespace kiln {

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 64;  // longer words are rare and rarely repeat

  // Appends the cached ids of word to out; false on a miss.
  bool lookup(std::string_view word, std::vector<int32_t>& out) const;
  void insert(std::string_view word, const int32_t* ids, size_t n) const;

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kShardCapacity = 8192;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  Shard& shard_of(std::string_view word, size_t* hash) const;

  mutable std::array<Shard, kShards> shards_;
};

}  // namespace kiln
