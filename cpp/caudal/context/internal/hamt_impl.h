// Template bodies of caudal::Hamt, included at the end of hamt.h. Internal to
// caudal/context; include caudal/context/hamt.h instead.
//
// Reference conventions of the recursive helpers:
//  * A node pointer passed in is borrowed.
//  * SetIn / DeleteIn report a result node that is either the input node
//    itself (unchanged, or edited in place by the owning Mutation) or a new
//    node carrying one reference for the caller.
//  * "Steal" (only for nodes owned by the Mutation, which are about to be
//    replaced): the new node takes over the old node's references without
//    retaining them, and the old node is left empty; the item that was in the
//    edited slot becomes the caller's to release (into the Garbage).
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_IMPL_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_IMPL_H_

#include <cassert>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace caudal {
namespace hamt_internal {

inline absl::Status KeyCompareFailed() {
  return absl::UnknownError("key comparison failed");
}
inline absl::Status OutOfMemory() {
  return absl::ResourceExhaustedError("out of memory for a map node");
}
inline absl::Status ToStatus(Code c) {
  switch (c) {
    case Code::kOk:
      return absl::OkStatus();
    case Code::kKeyCompareFailed:
      return KeyCompareFailed();
    case Code::kOutOfMemory:
      break;
  }
  return OutOfMemory();
}

}  // namespace hamt_internal

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

// ----------------------------------------------------------------- Hamt

template <typename Traits>
Hamt<Traits>::Hamt(const Hamt& other) noexcept
    : root_(other.root_), size_(other.size_) {
  if (root_ != nullptr) Retain(root_);
}

template <typename Traits>
Hamt<Traits>::Hamt(Hamt&& other) noexcept
    : root_(other.root_), size_(other.size_) {
  other.root_ = nullptr;
  other.size_ = 0;
}

template <typename Traits>
Hamt<Traits>& Hamt<Traits>::operator=(const Hamt& other) noexcept {
  Hamt copy(other);
  swap(copy);
  return *this;
}

template <typename Traits>
Hamt<Traits>& Hamt<Traits>::operator=(Hamt&& other) noexcept {
  Hamt moved(std::move(other));
  swap(moved);
  return *this;
}

template <typename Traits>
Hamt<Traits>::~Hamt() {
  if (root_ != nullptr) Unref(root_);
}

template <typename Traits>
void Hamt<Traits>::swap(Hamt& other) noexcept {
  std::swap(root_, other.root_);
  std::swap(size_, other.size_);
}

template <typename Traits>
void Hamt<Traits>::Clear() {
  Node* root = root_;
  root_ = nullptr;
  size_ = 0;
  if (root != nullptr) Unref(root);
}

template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::FindIn(const Node* node,
                                                 unsigned shift, const Key& key,
                                                 uint64_t hash,
                                                 const Entry** out) {
  using hamt_internal::BitFor;
  using hamt_internal::IndexOf;
  *out = nullptr;
  for (;;) {
    if (node->kind == hamt_internal::NodeKind::kBitmap) {
      const uint32_t bit = BitFor(hash, shift);
      if (node->datamap & bit) {
        const Entry& e = Entries(node)[IndexOf(node->datamap, bit)];
        if (e.hash != hash) return Code::kOk;
        const int eq = Traits::Eq(e.key, key);
        if (eq < 0) return Code::kKeyCompareFailed;
        if (eq) *out = &e;
        return Code::kOk;
      }
      if ((node->nodemap & bit) == 0) return Code::kOk;
      node = Children(node)[IndexOf(node->nodemap, bit)];
      shift += hamt_internal::kBits;
      continue;
    }
    const Entry* es = Entries(node);
    if (es[0].hash != hash) return Code::kOk;
    for (unsigned i = 0, n = node->datamap; i < n; ++i) {
      const int eq = Traits::Eq(es[i].key, key);
      if (eq < 0) return Code::kKeyCompareFailed;
      if (eq) {
        *out = &es[i];
        break;
      }
    }
    return Code::kOk;
  }
}

template <typename Traits>
absl::Status Hamt<Traits>::Find(const Key& key, uint64_t hash,
                                const Value** value) const {
  *value = nullptr;
  if (root_ == nullptr) return absl::OkStatus();
  const Entry* e = nullptr;
  const Code s = FindIn(root_, 0, key, hash, &e);
  if (e != nullptr) *value = &e->value;
  return hamt_internal::ToStatus(s);
}

template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::SetIn(Node* node, unsigned shift,
                                                const Entry& e, uint64_t mutid,
                                                Garbage* g, Node** out,
                                                bool* added) {
  return node->kind == hamt_internal::NodeKind::kBitmap
             ? SetInBitmap(node, shift, e, mutid, g, out, added)
             : SetInCollision(node, shift, e, mutid, g, out, added);
}

template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::SetInBitmap(
    Node* node, unsigned shift, const Entry& e, uint64_t mutid, Garbage* g,
    Node** out, bool* added) {
  using hamt_internal::IndexOf;
  const uint32_t bit = hamt_internal::BitFor(e.hash, shift);
  const bool owned = Owned(node, mutid);
  if (node->datamap & bit) {
    const unsigned i = IndexOf(node->datamap, bit);
    Entry& cur = Entries(node)[i];
    if (cur.hash == e.hash) {
      const int eq = Traits::Eq(cur.key, e.key);
      if (eq < 0) return Code::kKeyCompareFailed;
      if (eq) {
        *added = false;
        if (Traits::SameValue(cur.value, e.value)) {
          *out = node;
          return Code::kOk;
        }
        Traits::RetainValue(e.value);
        if (owned) {
          g->values_.push_back(cur.value);
          cur.value = e.value;
          *out = node;
          return Code::kOk;
        }
        Node* n = CopyNode(node, mutid);
        if (n == nullptr) {
          Traits::ReleaseValue(e.value);
          return Code::kOutOfMemory;
        }
        Entry& slot = Entries(n)[i];
        Traits::ReleaseValue(slot.value);  // `node` still holds it
        slot.value = e.value;
        *out = n;
        return Code::kOk;
      }
    }
    // Another key in the slot: both go down into a new subtree.
    const Entry moved = cur;
    Node* sub = MakePair(shift + hamt_internal::kBits, moved.hash, &moved,
                         nullptr, e, mutid);
    if (sub == nullptr) return Code::kOutOfMemory;
    Node* n = Rebuild(node, bit, nullptr, sub, mutid, owned);
    if (n == nullptr) {
      Unref(sub);
      return Code::kOutOfMemory;
    }
    if (owned) g->entries_.push_back(moved);
    *added = true;
    *out = n;
    return Code::kOk;
  }
  if (node->nodemap & bit) {
    const unsigned j = IndexOf(node->nodemap, bit);
    Node* child = Children(node)[j];
    Node* res = nullptr;
    const Code s =
        SetIn(child, shift + hamt_internal::kBits, e, mutid, g, &res, added);
    if (s != Code::kOk) return s;
    if (res == child) {
      *out = node;
      return Code::kOk;
    }
    if (owned) {
      Children(node)[j] = res;
      g->nodes_.push_back(child);
      *out = node;
      return Code::kOk;
    }
    Node* n = CopyNode(node, mutid);
    if (n == nullptr) {
      Unref(res);
      return Code::kOutOfMemory;
    }
    Node*& slot = Children(n)[j];
    Unref(slot);  // `node` still holds it
    slot = res;
    *out = n;
    return Code::kOk;
  }
  RetainEntry(e);
  Node* n = Rebuild(node, bit, &e, nullptr, mutid, owned);
  if (n == nullptr) {
    ReleaseEntry(e);
    return Code::kOutOfMemory;
  }
  *added = true;
  *out = n;
  return Code::kOk;
}

template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::SetInCollision(
    Node* node, unsigned shift, const Entry& e, uint64_t mutid, Garbage* g,
    Node** out, bool* added) {
  Entry* es = Entries(node);
  const unsigned count = node->datamap;
  if (e.hash != es[0].hash) {
    // A bitmap node at this depth holding both the collision node and e.
    Node* n = MakePair(shift, es[0].hash, nullptr, node, e, mutid);
    if (n == nullptr) return Code::kOutOfMemory;
    *added = true;
    *out = n;
    return Code::kOk;
  }
  const bool owned = Owned(node, mutid);
  for (unsigned i = 0; i < count; ++i) {
    const int eq = Traits::Eq(es[i].key, e.key);
    if (eq < 0) return Code::kKeyCompareFailed;
    if (!eq) continue;
    *added = false;
    if (Traits::SameValue(es[i].value, e.value)) {
      *out = node;
      return Code::kOk;
    }
    Traits::RetainValue(e.value);
    if (owned) {
      g->values_.push_back(es[i].value);
      es[i].value = e.value;
      *out = node;
      return Code::kOk;
    }
    Node* n = CopyNode(node, mutid);
    if (n == nullptr) {
      Traits::ReleaseValue(e.value);
      return Code::kOutOfMemory;
    }
    Entry& slot = Entries(n)[i];
    Traits::ReleaseValue(slot.value);  // `node` still holds it
    slot.value = e.value;
    *out = n;
    return Code::kOk;
  }
  Node* n = AllocCollision(count + 1, mutid);
  if (n == nullptr) return Code::kOutOfMemory;
  CopyEntries(Entries(n), es, count, owned);
  Entries(n)[count] = e;
  RetainEntry(e);
  if (owned) node->datamap = 0;
  *added = true;
  *out = Built(n);
  return Code::kOk;
}

template <typename Traits>
absl::Status Hamt<Traits>::Set(const Key& key, uint64_t hash,
                               const Value& value, Hamt* out) const {
  const Entry e{hash, key, value};
  if (root_ == nullptr) {
    Node* n = AllocBitmap(hamt_internal::BitFor(hash, 0), 0, 0);
    if (n == nullptr) return hamt_internal::OutOfMemory();
    Entries(n)[0] = e;
    RetainEntry(e);
    *out = Hamt(Built(n), 1);
    return absl::OkStatus();
  }
  Garbage g;  // stays empty: a persistent edit owns no node
  Node* res = nullptr;
  bool added = false;
  const Code s = SetIn(root_, 0, e, 0, &g, &res, &added);
  if (s != Code::kOk) return hamt_internal::ToStatus(s);
  if (res == root_) {
    if (out != this) *out = *this;
    return absl::OkStatus();
  }
  *out = Hamt(res, size_ + (added ? 1 : 0));
  return absl::OkStatus();
}

template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::DeleteIn(
    Node* node, unsigned shift, const Key& key, uint64_t hash, uint64_t mutid,
    bool is_root, Garbage* g, DeleteResult* out) {
  using hamt_internal::IndexOf;
  using hamt_internal::PopCount;
  if (node->kind == hamt_internal::NodeKind::kCollision) {
    return DeleteInCollision(node, key, hash, mutid, g, out);
  }
  const uint32_t bit = hamt_internal::BitFor(hash, shift);
  if (node->datamap & bit) {
    const unsigned i = IndexOf(node->datamap, bit);
    Entry* es = Entries(node);
    if (es[i].hash != hash) return Code::kOk;
    const int eq = Traits::Eq(es[i].key, key);
    if (eq < 0) return Code::kKeyCompareFailed;
    if (!eq) return Code::kOk;
    const unsigned ne = PopCount(node->datamap);
    const unsigned nc = PopCount(node->nodemap);
    Node** cs = Children(node);
    if (!is_root) {
      if (ne == 2 && nc == 0) {  // the other entry moves up
        out->kind = DeleteResult::kEntry;
        out->entry = es[1 - i];
        return Code::kOk;
      }
      if (ne == 1 && nc == 1 &&
          cs[0]->kind == hamt_internal::NodeKind::kCollision) {
        Retain(cs[0]);  // the lone collision node moves up
        out->kind = DeleteResult::kNode;
        out->node = cs[0];
        return Code::kOk;
      }
    } else if (ne == 1 && nc == 0) {
      out->kind = DeleteResult::kEmpty;
      return Code::kOk;
    }
    if (Owned(node, mutid)) {  // shrink in place
      const Entry removed = es[i];
      std::memmove(static_cast<void*>(es + i), es + i + 1,
                   (ne - i - 1) * sizeof(Entry));
      std::memmove(static_cast<void*>(es + ne - 1), cs, nc * sizeof(Node*));
      node->datamap &= ~bit;
      g->entries_.push_back(removed);
      out->kind = DeleteResult::kNode;
      out->node = node;
      return Code::kOk;
    }
    Node* n = Rebuild(node, bit, nullptr, nullptr, mutid, false);
    if (n == nullptr) return Code::kOutOfMemory;
    out->kind = DeleteResult::kNode;
    out->node = n;
    return Code::kOk;
  }
  if (node->nodemap & bit) {
    Node* child = Children(node)[IndexOf(node->nodemap, bit)];
    DeleteResult r;
    const Code s = DeleteIn(child, shift + hamt_internal::kBits, key, hash,
                            mutid, false, g, &r);
    if (s != Code::kOk || r.kind == DeleteResult::kNotFound) return s;
    return ChildChanged(node, bit, child, r, mutid, is_root, g, out);
  }
  return Code::kOk;
}

// The child in `bit`'s slot of `node` lost a key and became `r`.
template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::ChildChanged(
    Node* node, uint32_t bit, Node* old_child, DeleteResult r, uint64_t mutid,
    bool is_root, Garbage* g, DeleteResult* out) {
  using hamt_internal::PopCount;
  const bool owned = Owned(node, mutid);
  const unsigned ne = PopCount(node->datamap);
  const unsigned nc = PopCount(node->nodemap);
  const bool lone_child = !is_root && ne == 0 && nc == 1;
  assert(r.kind == DeleteResult::kNode || r.kind == DeleteResult::kEntry);
  if (r.kind == DeleteResult::kNode) {
    if (r.node == old_child) {  // edited in place
      out->kind = DeleteResult::kNode;
      out->node = node;
      return Code::kOk;
    }
    if (lone_child && r.node->kind == hamt_internal::NodeKind::kCollision) {
      *out = r;  // this node would only wrap a collision node: pull it up
      return Code::kOk;
    }
    const unsigned j = hamt_internal::IndexOf(node->nodemap, bit);
    if (owned) {
      Children(node)[j] = r.node;
      g->nodes_.push_back(old_child);
      out->kind = DeleteResult::kNode;
      out->node = node;
      return Code::kOk;
    }
    Node* n = CopyNode(node, mutid);
    if (n == nullptr) {
      Unref(r.node);
      return Code::kOutOfMemory;
    }
    Node*& slot = Children(n)[j];
    Unref(slot);  // `node` still holds it
    slot = r.node;
    out->kind = DeleteResult::kNode;
    out->node = n;
    return Code::kOk;
  }
  if (lone_child) {  // this node would hold a single entry: pull it up too
    *out = r;
    return Code::kOk;
  }
  RetainEntry(r.entry);
  Node* n = Rebuild(node, bit, &r.entry, nullptr, mutid, owned);
  if (n == nullptr) {
    ReleaseEntry(r.entry);
    return Code::kOutOfMemory;
  }
  if (owned) g->nodes_.push_back(old_child);
  out->kind = DeleteResult::kNode;
  out->node = n;
  return Code::kOk;
}

template <typename Traits>
typename Hamt<Traits>::Code Hamt<Traits>::DeleteInCollision(
    Node* node, const Key& key, uint64_t hash, uint64_t mutid, Garbage* g,
    DeleteResult* out) {
  Entry* es = Entries(node);
  const unsigned count = node->datamap;
  if (es[0].hash != hash) return Code::kOk;
  unsigned i = 0;
  for (; i < count; ++i) {
    const int eq = Traits::Eq(es[i].key, key);
    if (eq < 0) return Code::kKeyCompareFailed;
    if (eq) break;
  }
  if (i == count) return Code::kOk;
  if (count == 2) {
    out->kind = DeleteResult::kEntry;
    out->entry = es[1 - i];
    return Code::kOk;
  }
  if (Owned(node, mutid)) {
    const Entry removed = es[i];
    std::memmove(static_cast<void*>(es + i), es + i + 1,
                 (count - i - 1) * sizeof(Entry));
    node->datamap = count - 1;
    g->entries_.push_back(removed);
    out->kind = DeleteResult::kNode;
    out->node = node;
    return Code::kOk;
  }
  Node* n = AllocCollision(count - 1, mutid);
  if (n == nullptr) return Code::kOutOfMemory;
  CopyEntries(Entries(n), es, i, false);
  CopyEntries(Entries(n) + i, es + i + 1, count - i - 1, false);
  out->kind = DeleteResult::kNode;
  out->node = Built(n);
  return Code::kOk;
}

template <typename Traits>
absl::Status Hamt<Traits>::Delete(const Key& key, uint64_t hash, Hamt* out,
                                  bool* found) const {
  *found = false;
  DeleteResult r;
  if (root_ != nullptr) {
    Garbage g;  // stays empty: a persistent edit owns no node
    const Code s = DeleteIn(root_, 0, key, hash, 0, true, &g, &r);
    if (s != Code::kOk) return hamt_internal::ToStatus(s);
  }
  switch (r.kind) {
    case DeleteResult::kNotFound:
      if (out != this) *out = *this;
      break;
    case DeleteResult::kEmpty:
      *found = true;
      *out = Hamt();
      break;
    case DeleteResult::kNode:
      *found = true;
      *out = Hamt(r.node, size_ - 1);
      break;
    case DeleteResult::kEntry:  // never at the root
      assert(false);
      break;
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------- iteration

template <typename Traits>
Hamt<Traits>::Iterator::Iterator(const Node* start) {
  if (start != nullptr) {
    stack_[0] = Frame{start, 0};
    depth_ = 0;
    Advance();
  }
}

template <typename Traits>
void Hamt<Traits>::Iterator::Advance() {
  while (depth_ >= 0) {
    Frame& f = stack_[depth_];
    const unsigned ne = NumEntries(f.node);
    if (f.pos < ne) {
      cur_ = &Entries(f.node)[f.pos++];
      return;
    }
    if (f.pos < ne + NumChildren(f.node)) {
      const Node* child = Children(f.node)[f.pos - ne];
      ++f.pos;
      stack_[++depth_] = Frame{child, 0};
      continue;
    }
    --depth_;
  }
  cur_ = nullptr;
}

template <typename Traits>
typename Hamt<Traits>::Iterator Hamt<Traits>::begin() const {
  return Iterator(root_);
}

template <typename Traits>
typename Hamt<Traits>::Iterator Hamt<Traits>::end() const {
  return Iterator();
}

// ------------------------------------------------------------------ Diff

template <typename Traits>
template <typename Fn>
absl::Status Hamt<Traits>::Diff(const Hamt& base, Fn&& on_change) const {
  if (root_ == base.root_) return absl::OkStatus();
  if (base.root_ == nullptr)
    return EmitAll(Slot{nullptr, root_}, true, on_change);
  if (root_ == nullptr)
    return EmitAll(Slot{nullptr, base.root_}, false, on_change);
  return DiffNodes(base.root_, root_, 0, on_change);
}

template <typename Traits>
typename Hamt<Traits>::Slot Hamt<Traits>::SlotAt(const Node* n, uint32_t bit) {
  using hamt_internal::IndexOf;
  if (n->datamap & bit)
    return Slot{&Entries(n)[IndexOf(n->datamap, bit)], nullptr};
  if (n->nodemap & bit)
    return Slot{nullptr, Children(n)[IndexOf(n->nodemap, bit)]};
  return Slot{};
}

template <typename Traits>
template <typename Fn>
absl::Status Hamt<Traits>::DiffNodes(const Node* a, const Node* b,
                                     unsigned shift, Fn& fn) {
  if (a == b) return absl::OkStatus();
  if (a->kind != hamt_internal::NodeKind::kBitmap ||
      b->kind != hamt_internal::NodeKind::kBitmap) {
    return DiffGeneric(Slot{nullptr, a}, Slot{nullptr, b}, shift, fn);
  }
  uint32_t all = a->datamap | a->nodemap | b->datamap | b->nodemap;
  while (all != 0) {
    const uint32_t bit = all & (~all + 1);
    all &= all - 1;
    absl::Status s = DiffSlots(SlotAt(a, bit), SlotAt(b, bit),
                               shift + hamt_internal::kBits, fn);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

template <typename Traits>
template <typename Fn>
absl::Status Hamt<Traits>::DiffSlots(const Slot& a, const Slot& b,
                                     unsigned shift, Fn& fn) {
  if (a.empty()) return EmitAll(b, true, fn);
  if (b.empty()) return EmitAll(a, false, fn);
  if (a.node != nullptr && b.node != nullptr) {
    return DiffNodes(a.node, b.node, shift, fn);
  }
  if (a.entry != nullptr && b.entry != nullptr) {
    if (a.entry->hash == b.entry->hash) {
      const int eq = Traits::Eq(a.entry->key, b.entry->key);
      if (eq < 0) return hamt_internal::KeyCompareFailed();
      if (eq) {
        if (Traits::SameValue(a.entry->value, b.entry->value)) {
          return absl::OkStatus();
        }
        return fn(a.entry, b.entry);
      }
    }
    absl::Status s = fn(a.entry, nullptr);
    if (!s.ok()) return s;
    return fn(nullptr, b.entry);
  }
  return DiffGeneric(a, b, shift, fn);
}

// Entry against subtree, or collision nodes: look each key up on the other
// side. Costs O((|a| + |b|) * depth), for the (small) differing region only.
template <typename Traits>
template <typename Fn>
absl::Status Hamt<Traits>::DiffGeneric(const Slot& a, const Slot& b,
                                       unsigned shift, Fn& fn) {
  absl::Status s = ForEachInSlot(a, [&](const Entry& x) -> absl::Status {
    const Entry* y = nullptr;
    absl::Status fs = FindInSlot(b, shift, x.key, x.hash, &y);
    if (!fs.ok()) return fs;
    if (y == nullptr) return fn(&x, nullptr);
    if (!Traits::SameValue(x.value, y->value)) return fn(&x, y);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return ForEachInSlot(b, [&](const Entry& y) -> absl::Status {
    const Entry* x = nullptr;
    absl::Status fs = FindInSlot(a, shift, y.key, y.hash, &x);
    if (!fs.ok()) return fs;
    if (x == nullptr) return fn(nullptr, &y);
    return absl::OkStatus();
  });
}

template <typename Traits>
template <typename F>
absl::Status Hamt<Traits>::ForEachInSlot(const Slot& s, F&& f) {
  if (s.entry != nullptr) return f(*s.entry);
  for (Iterator it(s.node); !it.done(); ++it) {
    absl::Status st = f(*it);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

template <typename Traits>
template <typename Fn>
absl::Status Hamt<Traits>::EmitAll(const Slot& s, bool added, Fn& fn) {
  return ForEachInSlot(s, [&](const Entry& e) -> absl::Status {
    return added ? fn(nullptr, &e) : fn(&e, nullptr);
  });
}

template <typename Traits>
absl::Status Hamt<Traits>::FindInSlot(const Slot& s, unsigned shift,
                                      const Key& key, uint64_t hash,
                                      const Entry** out) {
  *out = nullptr;
  if (s.node != nullptr) {
    return hamt_internal::ToStatus(FindIn(s.node, shift, key, hash, out));
  }
  if (s.entry == nullptr || s.entry->hash != hash) return absl::OkStatus();
  const int eq = Traits::Eq(s.entry->key, key);
  if (eq < 0) return hamt_internal::KeyCompareFailed();
  if (eq) *out = s.entry;
  return absl::OkStatus();
}

// ------------------------------------------------------------- Mutation

template <typename Traits>
absl::Status Hamt<Traits>::Mutation::Set(const Key& key, uint64_t hash,
                                         const Value& value, Garbage* garbage) {
  const Entry e{hash, key, value};
  if (tree_.root_ == nullptr) {
    Node* n = AllocBitmap(hamt_internal::BitFor(hash, 0), 0, mutid_);
    if (n == nullptr) return hamt_internal::OutOfMemory();
    Entries(n)[0] = e;
    RetainEntry(e);
    tree_.root_ = Built(n);
    tree_.size_ = 1;
    return absl::OkStatus();
  }
  Garbage local;
  Garbage* g = garbage != nullptr ? garbage : &local;
  Node* res = nullptr;
  bool added = false;
  const Code s = SetIn(tree_.root_, 0, e, mutid_, g, &res, &added);
  if (s != Code::kOk) return hamt_internal::ToStatus(s);
  if (res != tree_.root_) {
    g->nodes_.push_back(tree_.root_);
    tree_.root_ = res;
  }
  if (added) ++tree_.size_;
  return absl::OkStatus();
}

template <typename Traits>
absl::Status Hamt<Traits>::Mutation::Delete(const Key& key, uint64_t hash,
                                            bool* found, Garbage* garbage) {
  *found = false;
  if (tree_.root_ == nullptr) return absl::OkStatus();
  Garbage local;
  Garbage* g = garbage != nullptr ? garbage : &local;
  DeleteResult r;
  const Code s = DeleteIn(tree_.root_, 0, key, hash, mutid_, true, g, &r);
  if (s != Code::kOk) return hamt_internal::ToStatus(s);
  switch (r.kind) {
    case DeleteResult::kNotFound:
      return absl::OkStatus();
    case DeleteResult::kEmpty:
      g->nodes_.push_back(tree_.root_);
      tree_.root_ = nullptr;
      break;
    case DeleteResult::kNode:
      if (r.node != tree_.root_) {
        g->nodes_.push_back(tree_.root_);
        tree_.root_ = r.node;
      }
      break;
    case DeleteResult::kEntry:  // never at the root
      assert(false);
      break;
  }
  *found = true;
  --tree_.size_;
  return absl::OkStatus();
}

template <typename Traits>
Hamt<Traits> Hamt<Traits>::Mutation::Finish() {
  Hamt out(tree_);
  mutid_ = hamt_internal::NewMutationId();
  return out;
}

template <typename Traits>
void Hamt<Traits>::Garbage::Release() {
  // Releasing may run code (the traits'), but nothing adds to this Garbage
  // meanwhile: pop one item at a time.
  while (!values_.empty()) {
    const Value v = values_.back();
    values_.pop_back();
    Traits::ReleaseValue(v);
  }
  while (!entries_.empty()) {
    const Entry e = entries_.back();
    entries_.pop_back();
    ReleaseEntry(e);
  }
  while (!nodes_.empty()) {
    Node* n = nodes_.back();
    nodes_.pop_back();
    Unref(n);
  }
}

// ------------------------------------------------------------ invariants

template <typename Traits>
absl::Status Hamt<Traits>::CheckInvariants() const {
  return CheckTree(root_, size_, 0);
}

template <typename Traits>
absl::Status Hamt<Traits>::Mutation::CheckInvariants() const {
  if (tree_.root_ != nullptr && tree_.root_->mutid == mutid_ &&
      Traits::NodeRefs(Header(tree_.root_)) != 1) {
    return absl::InternalError("the Mutation's owned root is shared");
  }
  return CheckTree(tree_.root_, tree_.size_, mutid_);
}

template <typename Traits>
absl::Status Hamt<Traits>::CheckTree(const Node* root, size_t size,
                                     uint64_t owned_mutid) {
  if (root == nullptr) {
    return size == 0 ? absl::OkStatus()
                     : absl::InternalError(
                           absl::StrCat("empty tree with size ", size));
  }
  if (root->kind != hamt_internal::NodeKind::kBitmap) {
    return absl::InternalError("the root is not a bitmap node");
  }
  size_t count = 0;
  absl::Status s = CheckNode(root, 0, 0, true, owned_mutid, &count);
  if (!s.ok()) return s;
  if (count != size) {
    return absl::InternalError(
        absl::StrCat("size() is ", size, " but the tree holds ", count));
  }
  return absl::OkStatus();
}

template <typename Traits>
absl::Status Hamt<Traits>::CheckNode(const Node* node, unsigned shift,
                                     uint64_t prefix, bool is_root,
                                     uint64_t owned_mutid, size_t* count) {
  using hamt_internal::BitFor;
  using hamt_internal::PrefixMask;
  auto fail = [&](const char* what) {
    return absl::InternalError(absl::StrCat(what, " (node at depth ",
                                            shift / hamt_internal::kBits,
                                            ", path prefix ", prefix, ")"));
  };
  if (Traits::NodeRefs(Header(node)) < 1) return fail("dead node in the tree");
  const bool owned = owned_mutid != 0 && node->mutid == owned_mutid;
  if (owned && Traits::NodeRefs(Header(node)) != 1) {
    return fail("a node owned by the Mutation is shared");
  }
  const Entry* es = Entries(node);
  if (node->kind == hamt_internal::NodeKind::kCollision) {
    const unsigned n = node->datamap;
    if (n < 2) return fail("collision node with fewer than 2 entries");
    if (node->nodemap != 0) return fail("collision node with a nodemap");
    for (unsigned i = 0; i < n; ++i) {
      if (es[i].hash != es[0].hash) return fail("collision hashes differ");
      if ((es[i].hash & PrefixMask(shift)) != prefix) {
        return fail("collision hash off its path");
      }
      for (unsigned j = i + 1; j < n; ++j) {
        const int eq = Traits::Eq(es[i].key, es[j].key);
        if (eq < 0) return hamt_internal::KeyCompareFailed();
        if (eq) return fail("duplicate key in a collision node");
      }
    }
    *count += n;
    return absl::OkStatus();
  }
  if (shift > hamt_internal::kMaxShift) return fail("bitmap node too deep");
  if (node->datamap & node->nodemap) return fail("datamap and nodemap overlap");
  if (shift == hamt_internal::kMaxShift &&
      ((node->datamap | node->nodemap) >> 16) != 0) {
    return fail("slot beyond the hash bits at the last level");
  }
  const unsigned ne = NumEntries(node);
  const unsigned nc = NumChildren(node);
  unsigned i = 0;
  for (uint32_t m = node->datamap; m != 0; m &= m - 1, ++i) {
    const uint32_t bit = m & (~m + 1);
    if ((es[i].hash & PrefixMask(shift)) != prefix) {
      return fail("entry hash off its path");
    }
    if (BitFor(es[i].hash, shift) != bit)
      return fail("entry in the wrong slot");
  }
  size_t sub = ne;
  Node* const* cs = Children(node);
  unsigned j = 0;
  for (uint32_t m = node->nodemap; m != 0; m &= m - 1, ++j) {
    const uint32_t bit = m & (~m + 1);
    const Node* c = cs[j];
    if (c == nullptr) return fail("null child");
    if (owned_mutid != 0 && c->mutid == owned_mutid && !owned) {
      return fail("a node owned by the Mutation under a node it does not own");
    }
    if (c->kind == hamt_internal::NodeKind::kBitmap &&
        shift + hamt_internal::kBits > hamt_internal::kMaxShift) {
      return fail("bitmap child below the last level");
    }
    const uint64_t slot = hamt_internal::PopCount(bit - 1);
    size_t csub = 0;
    absl::Status s =
        CheckNode(c, shift + hamt_internal::kBits, prefix | (slot << shift),
                  false, owned_mutid, &csub);
    if (!s.ok()) return s;
    sub += csub;
  }
  if (!is_root) {
    if (ne + nc == 0) return fail("empty node below the root");
    if (ne == 1 && nc == 0) return fail("lone entry not pulled up");
    if (ne == 0 && nc == 1 &&
        cs[0]->kind == hamt_internal::NodeKind::kCollision) {
      return fail("lone collision node not pulled up");
    }
    if (sub < 2) return fail("subtree of fewer than 2 entries");
  }
  *count += sub;
  return absl::OkStatus();
}

}  // namespace caudal

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_IMPL_H_
