// caudal::Hamt, part 1 of 4 (see hamt_impl.h): the private types, reading a
// node's entries and children, references, and building nodes. Internal to
// caudal/context; include caudal/context/hamt.h instead.
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_NODES_IMPL_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_NODES_IMPL_H_

#include <cassert>
#include <cstring>
#include <utility>

namespace caudal {

// ----------------------------------------------------------- private types

template <typename Traits>
struct Hamt<Traits>::DeleteResult {
  enum Kind { kNotFound, kNode, kEntry, kEmpty };
  Kind kind = kNotFound;
  // kNode: the resulting node (the input itself when edited in place, else a
  // new reference).
  Node* node = nullptr;
  // kEntry: the one entry left in a subtree that must be pulled up into the
  // parent; its references still belong to the old subtree.
  Entry entry{};
};

// One slot of a bitmap node during Diff: an entry, a child, or nothing.
template <typename Traits>
struct Hamt<Traits>::Slot {
  const Entry* entry = nullptr;
  const Node* node = nullptr;
  bool empty() const { return entry == nullptr && node == nullptr; }
};

// ------------------------------------------------------------ node access

template <typename Traits>
inline unsigned Hamt<Traits>::NumEntries(const Node* n) {
  return n->kind == hamt_internal::NodeKind::kBitmap
             ? hamt_internal::PopCount(n->datamap)
             : n->datamap;
}

template <typename Traits>
inline unsigned Hamt<Traits>::NumChildren(const Node* n) {
  return n->kind == hamt_internal::NodeKind::kBitmap
             ? hamt_internal::PopCount(n->nodemap)
             : 0;
}

template <typename Traits>
inline typename Hamt<Traits>::Entry* Hamt<Traits>::Entries(Node* n) {
  static_assert(sizeof(Node) % alignof(Entry) == 0, "entries follow the node");
  static_assert(sizeof(Entry) % alignof(Node*) == 0, "children follow entries");
  return reinterpret_cast<Entry*>(reinterpret_cast<char*>(n) + sizeof(Node));
}

template <typename Traits>
inline const typename Hamt<Traits>::Entry* Hamt<Traits>::Entries(
    const Node* n) {
  return reinterpret_cast<const Entry*>(reinterpret_cast<const char*>(n) +
                                        sizeof(Node));
}

template <typename Traits>
inline typename Hamt<Traits>::Node** Hamt<Traits>::Children(Node* n) {
  return reinterpret_cast<Node**>(Entries(n) + NumEntries(n));
}

template <typename Traits>
inline typename Hamt<Traits>::Node* const* Hamt<Traits>::Children(
    const Node* n) {
  return reinterpret_cast<Node* const*>(Entries(n) + NumEntries(n));
}

template <typename Traits>
void Hamt<Traits>::Unref(Node* n) {
  if (Traits::ReleaseNode(Header(n))) {
    ReleaseContents(Header(n));
    Traits::FreeNode(Header(n));
  }
}

template <typename Traits>
inline void Hamt<Traits>::RetainEntry(const Entry& e) {
  Traits::RetainKey(e.key);
  Traits::RetainValue(e.value);
}

template <typename Traits>
inline void Hamt<Traits>::ReleaseEntry(const Entry& e) {
  Traits::ReleaseKey(e.key);
  Traits::ReleaseValue(e.value);
}

template <typename Traits>
void Hamt<Traits>::ReleaseContents(NodeHeader* header) {
  Node* n = reinterpret_cast<Node*>(header);
  const unsigned ne = NumEntries(n);
  const unsigned nc = NumChildren(n);
  Entry* es = Entries(n);
  Node** cs = Children(n);
  // Empty the node before releasing anything: releasing may run code.
  n->datamap = 0;
  n->nodemap = 0;
  for (unsigned i = 0; i < ne; ++i) ReleaseEntry(es[i]);
  for (unsigned i = 0; i < nc; ++i) Unref(cs[i]);
}

template <typename Traits>
template <typename OnChild, typename OnEntry>
int Hamt<Traits>::VisitNode(const NodeHeader* header, OnChild&& on_child,
                            OnEntry&& on_entry) {
  const Node* n = reinterpret_cast<const Node*>(header);
  const unsigned ne = NumEntries(n);
  const unsigned nc = NumChildren(n);
  const Entry* es = Entries(n);
  Node* const* cs = Children(n);
  for (unsigned i = 0; i < ne; ++i) {
    if (int r = on_entry(es[i])) return r;
  }
  for (unsigned i = 0; i < nc; ++i) {
    if (int r = on_child(Header(static_cast<const Node*>(cs[i])))) return r;
  }
  return 0;
}

// ---------------------------------------------------------- node building

template <typename Traits>
typename Hamt<Traits>::Node* Hamt<Traits>::AllocBitmap(uint32_t datamap,
                                                       uint32_t nodemap,
                                                       uint64_t mutid) {
  const size_t bytes = sizeof(Node) +
                       hamt_internal::PopCount(datamap) * sizeof(Entry) +
                       hamt_internal::PopCount(nodemap) * sizeof(Node*);
  void* mem = Traits::AllocNode(bytes);
  if (mem == nullptr) return nullptr;
  Node* n = static_cast<Node*>(mem);
  n->kind = hamt_internal::NodeKind::kBitmap;
  n->datamap = datamap;
  n->nodemap = nodemap;
  n->mutid = mutid;
  return n;  // the caller fills the arrays at once, then calls Built
}

template <typename Traits>
typename Hamt<Traits>::Node* Hamt<Traits>::AllocCollision(uint32_t count,
                                                          uint64_t mutid) {
  void* mem = Traits::AllocNode(sizeof(Node) + count * sizeof(Entry));
  if (mem == nullptr) return nullptr;
  Node* n = static_cast<Node*>(mem);
  n->kind = hamt_internal::NodeKind::kCollision;
  n->datamap = count;
  n->nodemap = 0;
  n->mutid = mutid;
  return n;
}

template <typename Traits>
inline typename Hamt<Traits>::Node* Hamt<Traits>::Built(Node* n) {
  Traits::NodeBuilt(Header(n));
  return n;
}

// Copies entries, retaining them unless stealing.
template <typename Traits>
inline void Hamt<Traits>::CopyEntries(Entry* dst, const Entry* src, unsigned n,
                                      bool steal) {
  if (n == 0) return;
  std::memcpy(static_cast<void*>(dst), src, n * sizeof(Entry));
  if (!steal) {
    for (unsigned i = 0; i < n; ++i) RetainEntry(src[i]);
  }
}

template <typename Traits>
inline void Hamt<Traits>::CopyChildren(Node** dst, Node* const* src, unsigned n,
                                       bool steal) {
  if (n == 0) return;
  std::memcpy(static_cast<void*>(dst), src, n * sizeof(Node*));
  if (!steal) {
    for (unsigned i = 0; i < n; ++i) Retain(src[i]);
  }
}

// A copy of `n` (same shape, every reference retained).
template <typename Traits>
typename Hamt<Traits>::Node* Hamt<Traits>::CopyNode(const Node* n,
                                                    uint64_t mutid) {
  Node* c = n->kind == hamt_internal::NodeKind::kBitmap
                ? AllocBitmap(n->datamap, n->nodemap, mutid)
                : AllocCollision(n->datamap, mutid);
  if (c == nullptr) return nullptr;
  CopyEntries(Entries(c), Entries(n), NumEntries(n), false);
  CopyChildren(Children(c), Children(n), NumChildren(n), false);
  return Built(c);
}

// A bitmap node like `old` except for `bit`'s slot, which holds `entry`, or
// `child`, or nothing. The new node takes over the references of `entry` and
// `child`. Returns nullptr when out of memory (nothing taken over).
template <typename Traits>
typename Hamt<Traits>::Node* Hamt<Traits>::Rebuild(Node* old, uint32_t bit,
                                                   const Entry* entry,
                                                   Node* child, uint64_t mutid,
                                                   bool steal) {
  using hamt_internal::IndexOf;
  using hamt_internal::PopCount;
  const uint32_t datamap = (old->datamap & ~bit) | (entry ? bit : 0);
  const uint32_t nodemap = (old->nodemap & ~bit) | (child ? bit : 0);
  Node* n = AllocBitmap(datamap, nodemap, mutid);
  if (n == nullptr) return nullptr;
  const Entry* src_e = Entries(old);
  Node* const* src_c = Children(old);
  Entry* dst_e = Entries(n);
  Node** dst_c = Children(n);

  const unsigned ne = PopCount(old->datamap);
  const unsigned ei = IndexOf(old->datamap, bit);
  const unsigned e_skip = (old->datamap & bit) ? 1 : 0;
  CopyEntries(dst_e, src_e, ei, steal);
  dst_e += ei;
  if (entry != nullptr) *dst_e++ = *entry;
  CopyEntries(dst_e, src_e + ei + e_skip, ne - ei - e_skip, steal);

  const unsigned nc = PopCount(old->nodemap);
  const unsigned ci = IndexOf(old->nodemap, bit);
  const unsigned c_skip = (old->nodemap & bit) ? 1 : 0;
  CopyChildren(dst_c, src_c, ci, steal);
  dst_c += ci;
  if (child != nullptr) *dst_c++ = child;
  CopyChildren(dst_c, src_c + ci + c_skip, nc - ci - c_skip, steal);

  if (steal) {
    old->datamap = 0;
    old->nodemap = 0;
  }
  return Built(n);
}

// The smallest subtree at depth `shift` holding `b` and `a`: an entry
// (a_entry) or a subtree whose hashes all equal a_hash (a_node, a collision
// node). Retains what it stores. a_hash != b.hash unless a is an entry (then
// the result is a collision node).
template <typename Traits>
typename Hamt<Traits>::Node* Hamt<Traits>::MakePair(
    unsigned shift, uint64_t a_hash, const Entry* a_entry, Node* a_node,
    const Entry& b, uint64_t mutid) {
  using hamt_internal::BitFor;
  if (a_entry != nullptr && a_hash == b.hash) {
    Node* n = AllocCollision(2, mutid);
    if (n == nullptr) return nullptr;
    Entry* es = Entries(n);
    es[0] = *a_entry;
    es[1] = b;
    RetainEntry(es[0]);
    RetainEntry(es[1]);
    return Built(n);
  }
  assert(a_hash != b.hash && shift <= hamt_internal::kMaxShift);
  const uint32_t ba = BitFor(a_hash, shift);
  const uint32_t bb = BitFor(b.hash, shift);
  if (ba == bb) {
    Node* sub = MakePair(shift + hamt_internal::kBits, a_hash, a_entry, a_node,
                         b, mutid);
    if (sub == nullptr) return nullptr;
    Node* n = AllocBitmap(0, ba, mutid);
    if (n == nullptr) {
      Unref(sub);
      return nullptr;
    }
    Children(n)[0] = sub;
    return Built(n);
  }
  if (a_entry != nullptr) {
    Node* n = AllocBitmap(ba | bb, 0, mutid);
    if (n == nullptr) return nullptr;
    Entry* es = Entries(n);
    es[ba < bb ? 0 : 1] = *a_entry;
    es[ba < bb ? 1 : 0] = b;
    RetainEntry(es[0]);
    RetainEntry(es[1]);
    return Built(n);
  }
  Node* n = AllocBitmap(bb, ba, mutid);
  if (n == nullptr) return nullptr;
  Entries(n)[0] = b;
  RetainEntry(b);
  Children(n)[0] = a_node;
  Retain(a_node);
  return Built(n);
}

}  // namespace caudal

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_NODES_IMPL_H_
