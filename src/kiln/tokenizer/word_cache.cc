#include "kiln/tokenizer/word_cache.h"

#include <cstring>

namespace kiln {

WordCache::WordCache() {
  for (Shard& s : shards_) s.slots.assign(kSlots, 0);
}

uint64_t WordCache::hash_of(std::string_view word) {
  // FNV-1a with a final mix: words are short, so a byte loop beats a block hash's setup.
  uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : word) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

size_t WordCache::find_slot(const Shard& s, std::string_view word, uint64_t hash, bool* found) {
  const uint64_t tag = hash >> 32;
  size_t i = static_cast<size_t>(hash) & (kSlots - 1);
  while (true) {
    const uint64_t slot = s.slots[i];
    if (slot == 0) {
      *found = false;
      return i;
    }
    if ((slot >> 32) == tag) {
      const char* rec = s.arena.data() + static_cast<uint32_t>(slot) - 1;
      if (static_cast<uint8_t>(rec[0]) == word.size() && std::memcmp(rec + 2, word.data(), word.size()) == 0) {
        *found = true;
        return i;
      }
    }
    i = (i + 1) & (kSlots - 1);
  }
}

bool WordCache::lookup(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxWordBytes) return false;
  const uint64_t hash = hash_of(word);
  Shard& s = shards_[(hash >> 20) % kShards];
  std::lock_guard<std::mutex> lock(s.mu);
  bool found = false;
  const size_t i = find_slot(s, word, hash, &found);
  if (!found) return false;
  const char* rec = s.arena.data() + static_cast<uint32_t>(s.slots[i]) - 1;
  const size_t n = static_cast<uint8_t>(rec[1]);
  const size_t old = out.size();
  out.resize(old + n);
  std::memcpy(out.data() + old, rec + 2 + word.size(), n * sizeof(int32_t));
  return true;
}

void WordCache::insert(std::string_view word, const int32_t* ids, size_t n) const {
  if (word.size() > kMaxWordBytes || n > kMaxIds) return;
  const uint64_t hash = hash_of(word);
  Shard& s = shards_[(hash >> 20) % kShards];
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.entries >= kMaxEntries || s.arena.size() > (1u << 30)) {
    std::fill(s.slots.begin(), s.slots.end(), 0);
    s.arena.clear();
    s.entries = 0;
  }
  bool found = false;
  const size_t i = find_slot(s, word, hash, &found);
  if (found) return;
  const size_t offset = s.arena.size();
  s.arena.push_back(static_cast<char>(word.size()));
  s.arena.push_back(static_cast<char>(n));
  s.arena.append(word);
  s.arena.append(reinterpret_cast<const char*>(ids), n * sizeof(int32_t));
  s.slots[i] = ((hash >> 32) << 32) | static_cast<uint32_t>(offset + 1);
  ++s.entries;
}

}  // namespace kiln
