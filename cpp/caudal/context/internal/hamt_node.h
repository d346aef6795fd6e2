// Node layout of caudal::Hamt. Internal to caudal/context; do not depend on
// it directly.
//
// A node is one allocation: the fixed part below, then its entries, then its
// child pointers (bitmap nodes only). The node policy's header comes first so
// that a node pointer is also a header pointer (both types are
// standard-layout).
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_NODE_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_NODE_H_

#include <cstddef>
#include <cstdint>

namespace caudal {
namespace hamt_internal {

constexpr unsigned kBits = 5;
constexpr unsigned kMaxShift = 60;  // the last bitmap level uses bits 60..63
// Bitmap levels at shifts 0, 5, ..., 60, plus one collision node.
constexpr int kMaxDepth = kMaxShift / kBits + 2;

enum class NodeKind : uint8_t { kBitmap = 0, kCollision = 1 };

// What the recursive helpers return (one byte, no destructor: cheaper than
// an absl::Status at every level); the public methods convert.
enum class Code : uint8_t { kOk, kKeyCompareFailed, kOutOfMemory };

template <typename Header>
struct Node {
  Header hdr;
  NodeKind kind;
  uint32_t datamap;  // bitmap: slots holding an entry; collision: entry count
  uint32_t nodemap;  // bitmap: slots holding a child; collision: 0
  uint64_t mutid;    // the Mutation that may edit it in place (0: none)
};

template <typename Key, typename Value>
struct Entry {
  uint64_t hash;
  Key key;
  Value value;
};

inline unsigned PopCount(uint32_t x) {
#if defined(__POPCNT__)
  return static_cast<unsigned>(__builtin_popcount(x));
#else
  // Without -mpopcnt the builtin is a libgcc call; this is a few inline ops.
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  return (((x + (x >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24;
#endif
}

inline uint32_t BitFor(uint64_t hash, unsigned shift) {
  return uint32_t{1} << ((hash >> shift) & 31);
}

// Position of `bit`'s item among the items of `map`.
inline unsigned IndexOf(uint32_t map, uint32_t bit) {
  return PopCount(map & (bit - 1));
}

// Mask of the hash bits that select the path down to depth `shift`.
inline uint64_t PrefixMask(unsigned shift) {
  return shift >= 64 ? ~uint64_t{0} : (uint64_t{1} << shift) - 1;
}

}  // namespace hamt_internal
}  // namespace caudal

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_NODE_H_
