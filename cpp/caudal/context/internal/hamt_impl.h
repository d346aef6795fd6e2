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
//
// The bodies are in four parts, included in this order: hamt_nodes_impl.h
// (private types, node access and building), hamt_edit_impl.h (life, Find,
// Set, Delete), hamt_walk_impl.h (iteration, Diff), hamt_mutation_impl.h
// (Mutation, Garbage, invariants).
#ifndef CAUDAL_CONTEXT_INTERNAL_HAMT_IMPL_H_
#define CAUDAL_CONTEXT_INTERNAL_HAMT_IMPL_H_

#include "absl/status/status.h"

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

}  // namespace caudal

// The parts, in this order.
// clang-format off
#include "caudal/context/internal/hamt_nodes_impl.h"     // IWYU pragma: export
#include "caudal/context/internal/hamt_edit_impl.h"      // IWYU pragma: export
#include "caudal/context/internal/hamt_walk_impl.h"      // IWYU pragma: export
#include "caudal/context/internal/hamt_mutation_impl.h"  // IWYU pragma: export
// clang-format on

#endif  // CAUDAL_CONTEXT_INTERNAL_HAMT_IMPL_H_
