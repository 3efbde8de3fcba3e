// BlockManager: free list + reference counts + hash table of full blocks.
#include "kiln/engine/block_manager.h"

#include <algorithm>
#include <cstring>

namespace kiln {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size, bool prefix_caching)
    : block_size_(block_size), prefix_caching_(prefix_caching), blocks_(static_cast<size_t>(num_blocks)) {
  for (int32_t b = 0; b < static_cast<int32_t>(num_blocks); ++b) {
    free_.push_back(b);
    blocks_[static_cast<size_t>(b)].free_it = std::prev(free_.end());
  }
}

uint64_t BlockManager::hash_block(uint64_t parent, const int32_t* tokens) const {
  // FNV-1a over the parent hash and the token ids; hits are confirmed against the tokens.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 1099511628211ull;
  };
  mix(parent);
  for (int64_t i = 0; i < block_size_; ++i) mix(static_cast<uint32_t>(tokens[i]));
  return h;
}

int32_t BlockManager::lookup(uint64_t hash, const int32_t* tokens) const {
  auto it = cached_.find(hash);
  if (it == cached_.end()) return -1;
  const Block& b = blocks_[static_cast<size_t>(it->second)];
  return std::equal(b.tokens.begin(), b.tokens.end(), tokens) ? it->second : -1;
}

void BlockManager::uncache(int32_t id) {
  Block& b = blocks_[static_cast<size_t>(id)];
  if (!b.hashed) return;
  auto it = cached_.find(b.hash);
  if (it != cached_.end() && it->second == id) cached_.erase(it);
  b.hashed = false;
  b.tokens.clear();
}

int32_t BlockManager::take_free_block() {
  const int32_t id = free_.front();
  free_.pop_front();
  uncache(id);  // evict its cached contents
  blocks_[static_cast<size_t>(id)].ref_count = 1;
  return id;
}

void BlockManager::forget_cached() {
  for (int32_t id : free_) uncache(id);
}

void BlockManager::take_ref(int32_t id) {
  Block& b = blocks_[static_cast<size_t>(id)];
  if (b.ref_count++ == 0) free_.erase(b.free_it);
}

void BlockManager::allocate_cached_prefix(Sequence& seq) {
  if (!prefix_caching_ || seq.needs_prompt_logprobs() || !seq.block_table.empty()) return;
  const int64_t max_blocks = (seq.num_tokens() - 1) / block_size_;
  uint64_t parent = 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const int32_t* toks = seq.tokens.data() + i * block_size_;
    const uint64_t h = hash_block(parent, toks);
    const int32_t id = lookup(h, toks);
    if (id < 0) break;
    take_ref(id);
    seq.block_table.push_back(id);
    seq.block_hashes.push_back(h);
    parent = h;
  }
  seq.num_computed_tokens = static_cast<int64_t>(seq.block_table.size()) * block_size_;
}

bool BlockManager::can_allocate(const Sequence& seq, int64_t num_new_tokens) const {
  const int64_t need = Sequence::blocks_for(seq.num_computed_tokens + num_new_tokens, block_size_) -
                       static_cast<int64_t>(seq.block_table.size());
  return need <= num_free_blocks();
}

void BlockManager::allocate(Sequence& seq, int64_t num_new_tokens) {
  const int64_t want = Sequence::blocks_for(seq.num_computed_tokens + num_new_tokens, block_size_);
  while (static_cast<int64_t>(seq.block_table.size()) < want) seq.block_table.push_back(take_free_block());
}

void BlockManager::cache_full_blocks(Sequence& seq) {
  if (!prefix_caching_) return;
  const int64_t full = seq.num_computed_tokens / block_size_;
  for (int64_t i = static_cast<int64_t>(seq.block_hashes.size()); i < full; ++i) {
    const int32_t* toks = seq.tokens.data() + i * block_size_;
    const uint64_t h = hash_block(seq.block_hashes.empty() ? 0 : seq.block_hashes.back(), toks);
    seq.block_hashes.push_back(h);
    Block& b = blocks_[static_cast<size_t>(seq.block_table[static_cast<size_t>(i)])];
    if (b.hashed || cached_.count(h)) continue;  // the same contents are cached in another block
    b.hashed = true;
    b.hash = h;
    b.tokens.assign(toks, toks + block_size_);
    cached_[h] = seq.block_table[static_cast<size_t>(i)];
  }
}

void BlockManager::free(Sequence& seq) {
  // Tail blocks first, so they are evicted before the shared prefix they extend.
  for (auto it = seq.block_table.rbegin(); it != seq.block_table.rend(); ++it) {
    Block& b = blocks_[static_cast<size_t>(*it)];
    if (--b.ref_count == 0) {
      free_.push_back(*it);
      b.free_it = std::prev(free_.end());
    }
  }
  seq.block_table.clear();
  seq.block_hashes.clear();
  seq.num_computed_tokens = 0;
}

}  // namespace kiln
