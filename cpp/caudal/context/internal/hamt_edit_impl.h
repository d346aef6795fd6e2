// caudal::Hamt, part 2 of 4 (see hamt_impl.h): the map's life (copy, move,
// clear), Find, and the recursive Set and Delete, which copy the path to
// the edited slot or, inside a Mutation, edit owned nodes in place.
// Internal to caudal/context; include caudal/context/hamt.h instead.
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_EDIT_IMPL_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_EDIT_IMPL_H_

#include <utility>

namespace caudal {

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

}  // namespace caudal

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_EDIT_IMPL_H_
