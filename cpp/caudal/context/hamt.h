// Hamt: a persistent hash map (hash array mapped trie). Set and Delete return
// a new version that shares every untouched node with the old one, so taking
// a snapshot is copying one pointer and an edit costs O(log32 n) new nodes.
// It is the store behind caudal.Context (cpp/bindings/context_bindings.cc).
//
// Design note.
//  * Idea (Bagwell's HAMT, in the CHAMP layout of Steindorfer & Vinju): a
//    32-way trie indexed by 5-bit slices of a 64-bit key hash, level l using
//    bits [5l, 5l+5). A bitmap node keeps two 32-bit maps, `datamap` (slots
//    holding an entry inline) and `nodemap` (slots holding a child node), and
//    packs its entries, then its children, in slot order; the index of a slot
//    is the popcount of the map bits below it. Two keys with the same full
//    hash share a collision node (a flat list). The root is always a bitmap
//    node, or null when the map is empty. Entries store their hash, so the
//    trie never rehashes a key and compares keys only when hashes match.
//  * Canonical form: after every operation, a non-root bitmap node is never
//    {one entry, no child} nor {no entry, one collision child} (Delete pulls
//    those up into the parent), and a collision node holds >= 2 entries. So
//    the shape depends only on the set of keys, and Diff can skip identical
//    subtrees by pointer.
//  * Nodes are immutable once built, and shared between versions by reference
//    counts. Persistent Set/Delete copy the path from the root to the edited
//    slot (at most 14 nodes: 13 bitmap levels and one collision node).
//  * Mutation (immutables' mutate()/finish()): a Mutation owns a fresh
//    mutation id; nodes it creates carry that id and are edited in place by
//    later operations of the same Mutation, so N batched edits copy each path
//    once instead of N times. An owned node is referenced by exactly one
//    parent (or the Mutation's root), and the parent of an owned node is
//    owned. Finish() hands out the current root and moves the Mutation to a
//    new id: nodes that are now shared are never edited in place again.
//  * Where an operation drops references (a replaced value, a node replaced
//    by its copy), they are released after the tree is consistent again, or
//    handed to the caller in a Garbage to release later (the bindings release
//    Python objects only after their own bookkeeping is done, since that can
//    run arbitrary code).
//
// Invariants (CheckInvariants(), instantiated only where called: tests and
// debug checks): the maps of a node are disjoint and match its arrays; each
// entry sits in the slot its hash selects at its depth and every hash in a
// subtree agrees with the path to it; the canonical form above; collision
// keys are pairwise distinct; the entry count equals size().
//
// Cost: Find, Set and Delete are O(log32 n) node visits (about 4 levels at
// 100,000 keys). Set and Delete allocate one node per level on the edited
// path (persistent) or at most one or two nodes (Mutation, once the path is
// owned). Copying a Hamt, size() and empty() are O(1). Iteration is O(n).
// Diff(base) is proportional to the parts of the two versions that differ.
//
// Thread-safety: a Hamt value is immutable, and its nodes may be shared by
// versions living in different threads: reading (Find, iteration, Diff) and
// deriving new versions from one Hamt concurrently is safe when the traits'
// node reference counts are atomic (the default `AtomicNodes`), and the
// traits' Retain/Release/Eq are themselves thread-safe. Assigning to one Hamt
// object, or using one Mutation, from several threads at once is not.
//
// Traits. Key and Value are small trivially copyable handles (an int, a
// PyObject*); the traits own what they refer to:
//   struct Traits : caudal::AtomicNodes {  // or a node policy of its own
//     using Key = ...;
//     using Value = ...;
//     static void RetainKey(const Key&);     static void ReleaseKey(const
//     Key&); static void RetainValue(const Value&); static void
//     ReleaseValue(const Value&); static int Eq(const Key& stored, const Key&
//     probe);  // 1, 0, or -1: error static bool SameValue(const Value&, const
//     Value&);   // identity
//   };
// Eq may fail (a Python __eq__ raising): the operation then stops without
// changing anything and returns kUnknown ("key comparison failed"); the
// traits keep the details (the bindings: the pending Python exception).
// Hashes are passed in by the caller (computing one may fail too).
//
// Node policy (AtomicNodes below is the default): where node memory comes
// from and how nodes are counted. NodeHeader is the first member of every
// node; AllocNode(bytes) returns memory whose header holds one reference, or
// nullptr (the operation then returns kResourceExhausted and changes
// nothing); ReleaseNode returns true when the caller must free the node
// (release its contents, then FreeNode). NodeBuilt is called once a node's
// contents are complete. The bindings use a PyObject header, so that nodes
// are Python objects the cycle collector can traverse, exactly as CPython's
// own HAMT does.
#ifndef CAUDAL_CONTEXT_HAMT_H_
#define CAUDAL_CONTEXT_HAMT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "caudal/context/internal/hamt_node.h"

namespace caudal {

// The default node policy: operator new memory and atomic reference counts,
// so that versions may be shared across threads.
struct AtomicNodes {
  struct NodeHeader {
    std::atomic<uint32_t> refs;
  };
  static void* AllocNode(size_t bytes);  // nullptr when out of memory
  static void FreeNode(NodeHeader* node);
  static void RetainNode(NodeHeader* node) {
    node->refs.fetch_add(1, std::memory_order_relaxed);
  }
  static bool ReleaseNode(NodeHeader* node) {
    return node->refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }
  static uint32_t NodeRefs(const NodeHeader* node) {
    return node->refs.load(std::memory_order_acquire);
  }
  static void NodeBuilt(NodeHeader*) {}
};

namespace hamt_internal {
// A process-wide fresh id for a Mutation (never 0, never reused).
uint64_t NewMutationId();
}  // namespace hamt_internal

template <typename Traits>
class Hamt {
 public:
  using Key = typename Traits::Key;
  using Value = typename Traits::Value;
  using NodeHeader = typename Traits::NodeHeader;
  using Node = hamt_internal::Node<NodeHeader>;
  using Entry = hamt_internal::Entry<Key, Value>;
  static_assert(std::is_trivially_copyable<Key>::value &&
                    std::is_trivially_copyable<Value>::value,
                "Key and Value are handles; the traits count references");

  class Garbage;
  class Iterator;
  class Mutation;

  Hamt() noexcept = default;
  Hamt(const Hamt& other) noexcept;
  Hamt(Hamt&& other) noexcept;
  Hamt& operator=(const Hamt& other) noexcept;
  Hamt& operator=(Hamt&& other) noexcept;
  ~Hamt();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Drops this version's reference to its nodes (the map becomes empty).
  void Clear();
  void swap(Hamt& other) noexcept;
  // True when both are the same version (O(1); equal maps built separately
  // are not).
  bool SameVersion(const Hamt& other) const { return root_ == other.root_; }

  // Sets *value to the stored value, or to nullptr when `key` is absent. The
  // pointer is valid while this version lives.
  absl::Status Find(const Key& key, uint64_t hash, const Value** value) const;
  // *out = this map with key -> value (`out` may be `this`). Setting the
  // value a key already has (SameValue) returns this same version.
  absl::Status Set(const Key& key, uint64_t hash, const Value& value,
                   Hamt* out) const;
  // *out = this map without `key`; *found tells whether it was there (if
  // not, *out is this same version).
  absl::Status Delete(const Key& key, uint64_t hash, Hamt* out,
                      bool* found) const;

  // Forward iteration over the entries, in trie order (by hash, not by
  // insertion). Iterators hold no reference: the Hamt must outlive them.
  Iterator begin() const;
  Iterator end() const;

  // Reports how *this differs from `base`: on_change(before, after) is
  // called once per differing key with const Entry* arguments, before ==
  // nullptr for an added key, after == nullptr for a removed one, both for a
  // key whose value is not SameValue. Subtrees shared with `base` are skipped.
  // on_change returns absl::Status; a non-OK status stops the walk and is
  // returned. Keys are compared with Traits::Eq (errors as for Find).
  template <typename Fn>
  absl::Status Diff(const Hamt& base, Fn&& on_change) const;

  absl::Status CheckInvariants() const;

  // Node-level access for node policies whose nodes live in a host runtime
  // (the bindings' Python node type): the root, the references a node holds,
  // and releasing a dead node's contents.
  const NodeHeader* root_header() const { return Header(root_); }
  // Calls on_child(const NodeHeader*) for each child and on_entry(const
  // Entry&) for each entry; stops at the first non-zero result, returned.
  template <typename OnChild, typename OnEntry>
  static int VisitNode(const NodeHeader* node, OnChild&& on_child,
                       OnEntry&& on_entry);
  // Releases everything the node holds and leaves it empty (for the node
  // policy's deallocation when ReleaseNode returned false).
  static void ReleaseContents(NodeHeader* node);

 private:
  friend class Mutation;
  using Code = hamt_internal::Code;
  struct DeleteResult;
  struct Slot;
  class NodeRef;

  Hamt(Node* root, size_t size) : root_(root), size_(size) {}

  static NodeHeader* Header(Node* n) {
    return reinterpret_cast<NodeHeader*>(n);
  }
  static const NodeHeader* Header(const Node* n) {
    return reinterpret_cast<const NodeHeader*>(n);
  }
  static unsigned NumEntries(const Node* n);
  static unsigned NumChildren(const Node* n);
  static Entry* Entries(Node* n);
  static const Entry* Entries(const Node* n);
  static Node** Children(Node* n);
  static Node* const* Children(const Node* n);

  static void Retain(Node* n) { Traits::RetainNode(Header(n)); }
  static void Unref(Node* n);
  static void RetainEntry(const Entry& e);
  static void ReleaseEntry(const Entry& e);
  static bool Owned(const Node* n, uint64_t mutid) {
    return mutid != 0 && n->mutid == mutid;
  }

  static Node* AllocBitmap(uint32_t datamap, uint32_t nodemap, uint64_t mutid);
  static Node* AllocCollision(uint32_t count, uint64_t mutid);
  static Node* Built(Node* n);
  static void CopyEntries(Entry* dst, const Entry* src, unsigned n, bool steal);
  static void CopyChildren(Node** dst, Node* const* src, unsigned n,
                           bool steal);
  static Node* CopyNode(const Node* n, uint64_t mutid);
  static Node* Rebuild(Node* old, uint32_t bit, const Entry* entry, Node* child,
                       uint64_t mutid, bool steal);
  static Node* MakePair(unsigned shift, uint64_t a_hash, const Entry* a_entry,
                        Node* a_node, const Entry& b, uint64_t mutid);

  static Code FindIn(const Node* node, unsigned shift, const Key& key,
                     uint64_t hash, const Entry** out);
  static Code SetIn(Node* node, unsigned shift, const Entry& e, uint64_t mutid,
                    Garbage* g, Node** out, bool* added);
  static Code SetInBitmap(Node* node, unsigned shift, const Entry& e,
                          uint64_t mutid, Garbage* g, Node** out, bool* added);
  static Code SetInCollision(Node* node, unsigned shift, const Entry& e,
                             uint64_t mutid, Garbage* g, Node** out,
                             bool* added);
  static Code DeleteIn(Node* node, unsigned shift, const Key& key,
                       uint64_t hash, uint64_t mutid, bool is_root, Garbage* g,
                       DeleteResult* out);
  static Code DeleteInCollision(Node* node, const Key& key, uint64_t hash,
                                uint64_t mutid, Garbage* g, DeleteResult* out);
  static Code ChildChanged(Node* node, uint32_t bit, Node* old_child,
                           DeleteResult r, uint64_t mutid, bool is_root,
                           Garbage* g, DeleteResult* out);

  static Slot SlotAt(const Node* n, uint32_t bit);
  template <typename Fn>
  static absl::Status DiffNodes(const Node* a, const Node* b, unsigned shift,
                                Fn& fn);
  template <typename Fn>
  static absl::Status DiffSlots(const Slot& a, const Slot& b, unsigned shift,
                                Fn& fn);
  template <typename Fn>
  static absl::Status DiffGeneric(const Slot& a, const Slot& b, unsigned shift,
                                  Fn& fn);
  template <typename F>
  static absl::Status ForEachInSlot(const Slot& s, F&& f);
  template <typename Fn>
  static absl::Status EmitAll(const Slot& s, bool added, Fn& fn);
  static absl::Status FindInSlot(const Slot& s, unsigned shift, const Key& key,
                                 uint64_t hash, const Entry** out);

  static absl::Status CheckTree(const Node* root, size_t size,
                                uint64_t owned_mutid);
  static absl::Status CheckNode(const Node* node, unsigned shift,
                                uint64_t prefix, bool is_root,
                                uint64_t owned_mutid, size_t* count);

  Node* root_ = nullptr;
  size_t size_ = 0;
};

// References an operation dropped, released by Release() or the destructor
// (both with whatever the traits need held, e.g. the GIL).
template <typename Traits>
class Hamt<Traits>::Garbage {
 public:
  Garbage() = default;
  Garbage(const Garbage&) = delete;
  Garbage& operator=(const Garbage&) = delete;
  ~Garbage() { Release(); }

  bool empty() const {
    return nodes_.empty() && entries_.empty() && values_.empty();
  }
  void Release();

 private:
  friend class Hamt;
  absl::InlinedVector<Node*, 4> nodes_;
  absl::InlinedVector<Entry, 2> entries_;
  absl::InlinedVector<Value, 2> values_;
};

template <typename Traits>
class Hamt<Traits>::Iterator {
 public:
  Iterator() = default;
  const Entry& operator*() const { return *cur_; }
  const Entry* operator->() const { return cur_; }
  Iterator& operator++() {
    Advance();
    return *this;
  }
  bool operator==(const Iterator& o) const { return cur_ == o.cur_; }
  bool operator!=(const Iterator& o) const { return cur_ != o.cur_; }
  bool done() const { return cur_ == nullptr; }

 private:
  friend class Hamt;
  explicit Iterator(const Node* start);
  void Advance();

  struct Frame {
    const Node* node;
    uint32_t pos;  // entries first, then children
  };
  Frame stack_[hamt_internal::kMaxDepth];
  int depth_ = -1;
  const Entry* cur_ = nullptr;
};

// A batch of edits applied in place (see the design note). Start one from a
// Hamt (O(1)); Finish() returns the result as a Hamt (O(1)) and the Mutation
// may go on (later edits leave the returned version unchanged).
template <typename Traits>
class Hamt<Traits>::Mutation {
 public:
  explicit Mutation(const Hamt& base)
      : tree_(base), mutid_(hamt_internal::NewMutationId()) {}
  Mutation(const Mutation&) = delete;
  Mutation& operator=(const Mutation&) = delete;

  size_t size() const { return tree_.size_; }
  absl::Status Find(const Key& key, uint64_t hash, const Value** value) const {
    return tree_.Find(key, hash, value);
  }
  // With garbage == nullptr, what the call drops is released before it
  // returns (after the tree is consistent again).
  absl::Status Set(const Key& key, uint64_t hash, const Value& value,
                   Garbage* garbage = nullptr);
  absl::Status Delete(const Key& key, uint64_t hash, bool* found,
                      Garbage* garbage = nullptr);
  Hamt Finish();
  // The current contents, for iteration and VisitNode (valid until the next
  // edit).
  const Hamt& current() const { return tree_; }
  // Hamt's invariants, plus: every node owned by this Mutation has one
  // reference and an owned parent.
  absl::Status CheckInvariants() const;

 private:
  Hamt tree_;
  uint64_t mutid_;
};

}  // namespace caudal

#include "caudal/context/internal/hamt_impl.h"  // IWYU pragma: export

#endif  // CAUDAL_CONTEXT_HAMT_H_
