// BpeMerges: the merge table of a BPE vocabulary (pair of ids -> rank and merged id) and the
// merge loop: repeatedly merge the adjacent pair of lowest rank, leftmost first, until no pair
// has a rule. Short words use a linear scan; long ones a heap over a linked list of symbols.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln {

class BpeMerges {
 public:
  // rank: priority (lower merges first). The first rule for a pair wins.
  void add(int32_t left, int32_t right, int32_t merged, int32_t rank);
  size_t size() const { return count_; }

  struct Rule {
    int32_t rank = -1;
    int32_t merged = -1;
  };
  // The rule for (left, right), rank -1 when there is none.
  Rule find(int32_t left, int32_t right) const;

  // Merges symbols in place. symbols: [n] token ids of the word's initial pieces.
  void apply(std::vector<int32_t>& symbols) const;

 private:
  void apply_scan(std::vector<int32_t>& symbols) const;
  void apply_heap(std::vector<int32_t>& symbols) const;
  void grow();

  struct Slot {
    uint64_t key = kEmpty;
    Rule rule;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t key_of(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  size_t slot_of(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }

  std::vector<Slot> slots_;  // open addressing, linear probing, load <= 1/2
  int shift_ = 64;
  size_t count_ = 0;
};

}  // namespace kiln
