// BlockManager: which KV cache blocks belong to which sequence. Blocks hold block_size tokens and
// carry reference counts, so sequences with a common prefix share blocks. A full block is
// registered under a hash chained over every token before it (prefix caching); a freed block
// keeps its hash until it is handed out again, so a later request with the same prefix can
// take it back. Free blocks leave in the order they were freed (least recently used first).
#pragma once
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

#include "kiln/engine/sequence.h"

namespace kiln {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size, bool prefix_caching);

  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t block_size() const { return block_size_; }
  // Free blocks, cached ones that may still be reclaimed by a prefix hit included.
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // For a sequence without blocks: take the cached blocks of its longest cached prefix of full
  // blocks (leaving at least one token to compute), and mark those tokens computed.
  void allocate_cached_prefix(Sequence& seq);
  // Whether num_new_tokens more tokens of seq fit in the free blocks.
  bool can_allocate(const Sequence& seq, int64_t num_new_tokens) const;
  // Appends the blocks those tokens need to seq's table; can_allocate must have said yes.
  void allocate(Sequence& seq, int64_t num_new_tokens);
  // After a step: registers the blocks the step filled in the prefix cache.
  void cache_full_blocks(Sequence& seq);
  // Drops seq's blocks (and its computed tokens: the cache no longer holds them for it).
  void free(Sequence& seq);
  // Drops the prefix-cache entries of every free block (they stay free, in their order).
  void forget_cached();

  int64_t ref_count(int32_t block) const { return blocks_[static_cast<size_t>(block)].ref_count; }

 private:
  struct Block {
    int32_t ref_count = 0;
    bool hashed = false;
    uint64_t hash = 0;
    std::vector<int32_t> tokens;          // its tokens, to confirm a hash hit
    std::list<int32_t>::iterator free_it;  // valid while ref_count == 0
  };

  int32_t take_free_block();
  void uncache(int32_t block);  // out of the prefix cache (its table entry and tokens)
  void take_ref(int32_t block);
  uint64_t hash_block(uint64_t parent, const int32_t* tokens) const;
  int32_t lookup(uint64_t hash, const int32_t* tokens) const;

  int64_t block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::list<int32_t> free_;  // front: next to hand out
  std::unordered_map<uint64_t, int32_t> cached_;  // hash -> block
};

}  // namespace kiln
