#include "kiln/tokenizer/bpe_merges.h"

#include <queue>

namespace kiln {
namespace {

// Below this many symbols the quadratic scan beats the heap (no allocation, tiny constant).
constexpr size_t kScanLimit = 48;

}  // namespace

void BpeMerges::grow() {
  const size_t capacity = slots_.empty() ? 1024 : slots_.size() * 2;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(capacity, Slot{});
  shift_ = 64 - __builtin_ctzll(capacity);
  for (const Slot& s : old) {
    if (s.key == kEmpty) continue;
    size_t i = slot_of(s.key);
    while (slots_[i].key != kEmpty) i = (i + 1) & (capacity - 1);
    slots_[i] = s;
  }
}

void BpeMerges::add(int32_t left, int32_t right, int32_t merged, int32_t rank) {
  if ((count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = key_of(left, right);
  size_t i = slot_of(key);
  while (slots_[i].key != kEmpty) {
    if (slots_[i].key == key) return;
    i = (i + 1) & (slots_.size() - 1);
  }
  slots_[i] = Slot{key, Rule{rank, merged}};
  ++count_;
}

BpeMerges::Rule BpeMerges::find(int32_t left, int32_t right) const {
  if (slots_.empty() || left < 0 || right < 0) return {};
  const uint64_t key = key_of(left, right);
  size_t i = slot_of(key);
  while (slots_[i].key != kEmpty) {
    if (slots_[i].key == key) return slots_[i].rule;
    i = (i + 1) & (slots_.size() - 1);
  }
  return {};
}

void BpeMerges::apply(std::vector<int32_t>& symbols) const {
  if (symbols.size() < 2) return;
  if (symbols.size() <= kScanLimit) {
    apply_scan(symbols);
  } else {
    apply_heap(symbols);
  }
}

void BpeMerges::apply_scan(std::vector<int32_t>& s) const {
  // rules[i] is the rule for the pair (s[i], s[i+1]).
  Rule rules[kScanLimit];
  size_t n = s.size();
  for (size_t i = 0; i + 1 < n; ++i) rules[i] = find(s[i], s[i + 1]);
  while (n > 1) {
    size_t best = n;
    for (size_t i = 0; i + 1 < n; ++i) {
      if (rules[i].rank >= 0 && (best == n || rules[i].rank < rules[best].rank)) best = i;
    }
    if (best == n) break;
    s[best] = rules[best].merged;
    for (size_t i = best + 1; i + 1 < n; ++i) {
      s[i] = s[i + 1];
      rules[i] = rules[i + 1];
    }
    --n;
    if (best > 0) rules[best - 1] = find(s[best - 1], s[best]);
    if (best + 1 < n) rules[best] = find(s[best], s[best + 1]);
  }
  s.resize(n);
}

void BpeMerges::apply_heap(std::vector<int32_t>& s) const {
  const auto n = static_cast<int32_t>(s.size());
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank, pos, merged;
    // std::priority_queue is a max-heap: "less" means lower priority (higher rank, later pos).
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> heap;
  auto push = [&](int32_t left) {
    if (left < 0 || next[left] < 0) return;
    const Rule r = find(s[left], s[next[left]]);
    if (r.rank >= 0) heap.push(Candidate{r.rank, left, r.merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t right = next[c.pos];
    if (s[c.pos] < 0 || right < 0) continue;  // merged away, or now the last symbol
    const Rule r = find(s[c.pos], s[right]);
    if (r.merged != c.merged || r.rank != c.rank) continue;  // the pair changed since the push
    s[c.pos] = c.merged;
    s[right] = -1;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  size_t out = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (s[i] >= 0) s[out++] = s[i];
  }
  s.resize(out);
}

}  // namespace kiln
