// caudal::Hamt, part 4 of 4 (see hamt_impl.h): Mutation (batched in-place
// edits) and its Garbage, and the invariant checkers. Internal to
// caudal/context; include caudal/context/hamt.h instead.
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_MUTATION_IMPL_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_MUTATION_IMPL_H_

#include "absl/strings/str_cat.h"

namespace caudal {

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

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_MUTATION_IMPL_H_
