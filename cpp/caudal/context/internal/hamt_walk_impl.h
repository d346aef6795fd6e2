// caudal::Hamt, part 3 of 4 (see hamt_impl.h): iteration, and Diff, which
// skips the subtrees two maps share. Internal to caudal/context; include
// caudal/context/hamt.h instead.
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_WALK_IMPL_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_WALK_IMPL_H_

namespace caudal {

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

}  // namespace caudal

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_WALK_IMPL_H_
