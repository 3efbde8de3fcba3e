// WordCache: thread-safe memo of word -> token ids for the BPE tokenizers. Text repeats its words,
// so most words skip the merge loop. Each shard is a flat open-addressing table over one byte
// arena holding key and ids side by side: a hit costs a hash, one slot and one record read.
// Sharded so concurrent encodes rarely share a lock; a shard that fills up is cleared (cheap,
// and the hot words come straight back).
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 64;  // longer words are rare and rarely repeat
  static constexpr size_t kMaxIds = 64;

  WordCache();

  // Appends the cached ids of word to out; false on a miss.
  bool lookup(std::string_view word, std::vector<int32_t>& out) const;
  void insert(std::string_view word, const int32_t* ids, size_t n) const;

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kSlots = 8192;             // per shard, a power of two
  static constexpr size_t kMaxEntries = kSlots / 2;  // keeps probe runs short

  struct Shard {
    std::mutex mu;
    // 0 is empty; else the high 32 bits of the word's hash and 1 + the record's arena offset.
    std::vector<uint64_t> slots;
    // Records: uint8 key length, uint8 id count, key bytes, ids (int32, unaligned).
    std::string arena;
    size_t entries = 0;
  };
  static uint64_t hash_of(std::string_view word);
  // The slot holding word, or the empty slot where it would go.
  static size_t find_slot(const Shard& s, std::string_view word, uint64_t hash, bool* found);

  mutable std::array<Shard, kShards> shards_;
};

}  // namespace kiln
