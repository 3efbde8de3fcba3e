#include "kiln/tokenizer/word_cache.h"

namespace kiln {

WordCache::Shard& WordCache::shard_of(std::string_view word, size_t* hash) const {
  *hash = StringHash{}(word);
  return shards_[(*hash >> 7) % kShards];
}

bool WordCache::lookup(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxWordBytes) return false;
  size_t hash = 0;
  Shard& s = shard_of(word, &hash);
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.map.find(word);
  if (it == s.map.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::insert(std::string_view word, const int32_t* ids, size_t n) const {
  if (word.size() > kMaxWordBytes) return;
  size_t hash = 0;
  Shard& s = shard_of(word, &hash);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.map.size() >= kShardCapacity) s.map.clear();
  s.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
}

}  // namespace kiln
