// The key walker's class and shared state (key_walk.cc: the walk of
// builtin values, the memo and the per-thread entry points;
// key_walk_objects.cc: objects keyed through their class, from enums and
// __caudal_key__ hooks to dataclasses and pydantic models). Internal to
// the bindings: use key_walk.h. Must be used with the GIL held.
#ifndef CAUDAL_BINDINGS_KEY_WALKER_H_
#define CAUDAL_BINDINGS_KEY_WALKER_H_

#include <Python.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "key_walk.h"

namespace caudal::bindings::key_walk_internal {

constexpr int kMaxDepth = 64;
constexpr const char* kTooDeep = "nested too deeply (or recursive)";
constexpr const char* kCycle = "contains itself (a reference cycle)";
constexpr const char* kNoStableKey =
    "type has no stable key (use keyable data, or add __caudal_key__)";

// Raw token kinds (KeyHasher::AddRaw) used by the walk.
constexpr uint8_t kRawUnsetSlot = 1;
constexpr uint8_t kRawClass = 2;  // a class as a value (defaultdict factory)

// Containers, str and bytes at least this long are worth a memo entry when
// they may be shared; shorter ones are re-walked (as cheap as a replay).
constexpr Py_ssize_t kMemoMinPayload = 1024;

// Imported and interned once (InitGlobals, key_walk_objects.cc).
extern PyObject* g_enum_type;       // enum.Enum
extern PyObject* g_flag_type;       // enum.Flag
extern PyTypeObject* g_odict_type;  // collections.OrderedDict
extern PyTypeObject* g_ddict_type;  // collections.defaultdict
extern PyObject* g_ddict_factory;   // its default_factory descriptor
extern PyObject* g_dc_fields;       // dataclasses.fields
extern PyObject* g_str_caudal_key;
extern PyObject* g_str_dc_fields_attr;
extern PyObject* g_str_name;
extern PyObject* g_str_enum_name;   // _name_
extern PyObject* g_str_enum_value;  // _value_
extern PyObject* g_str_pydantic_fields;
extern PyObject* g_str_pydantic_extra;
extern PyObject* g_str_pydantic_private;

// Imports what the object walk needs; false with a Python exception set.
bool InitGlobals();

// ---------------------------------------------------------------------------
// The walk.

class Walker {
 public:
  explicit Walker(KeyHasher& h) : h_(h) {}
  ~Walker() { Clear(); }
  Walker(const Walker&) = delete;
  Walker& operator=(const Walker&) = delete;

  UnkeyableReason Walk(PyObject* v, int depth);

  // Drops the memo (and its references); keeps its buffers.
  void Clear() {
    // Copy first: a __del__ run by a DECREF may key something (it then uses
    // a walker of its own) but must not see this memo half cleared.
    if (memo_.empty()) return;
    std::vector<MemoEntry> entries;
    entries.swap(memo_);
    memo_index_.clear();
    deepest_ = 0;
    // Keep small buffers for the next walk; give back what a huge input took.
    if (arena_.capacity() > kKeepMemoBytes) {
      std::string().swap(arena_);
    } else {
      arena_.clear();
    }
    for (const MemoEntry& e : entries) Py_DECREF(e.obj);
    entries.clear();
    if (memo_.empty() &&
        entries.capacity() * sizeof(MemoEntry) <= kKeepMemoBytes)
      memo_.swap(entries);
  }

 private:
  struct MemoEntry {
    PyObject* obj;
    size_t offset;  // encoding in arena_, once done
    size_t len;
    int height;  // nesting below the object
    bool done;
  };
  static constexpr size_t kLinearMemo = 8;
  static constexpr size_t kKeepMemoBytes = 1 << 20;

  // Keys an exact None, bool, int (64-bit), float or short str inline and
  // returns true; false for anything else (nothing added).
  bool AddScalar(PyObject* v);
  UnkeyableReason WalkShared(PyObject* v, int depth);
  UnkeyableReason WalkFresh(PyObject* v, int depth);
  UnkeyableReason WalkStr(PyObject* v);
  UnkeyableReason WalkInt(PyObject* v);
  UnkeyableReason WalkBigInt(PyObject* exact);
  UnkeyableReason WalkSequence(PyObject* v, bool tuple, int depth);
  UnkeyableReason WalkDict(PyObject* v, int depth);
  bool WalkSmallStrDict(PyObject* d, Py_ssize_t n, int depth,
                        UnkeyableReason* result);
  UnkeyableReason WalkOrderedDict(PyObject* v, int depth);
  UnkeyableReason WalkSet(PyObject* v, int depth);
  UnkeyableReason WalkObject(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkVia(PyTypeObject* t, PyObject* rep, int depth);
  UnkeyableReason WalkBuiltinSubclass(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkInstanceState(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkPydantic(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkDataclass(PyObject* v, PyTypeObject* t, int depth);
  // Walks a new reference and releases it.
  UnkeyableReason WalkOwned(PyObject* owned, int depth) {
    UnkeyableReason r = Walk(owned, depth);
    Py_DECREF(owned);
    return r;
  }
  UnkeyableReason WalkBorrowed(PyObject* v, int depth) {
    Py_INCREF(v);
    return WalkOwned(v, depth);
  }

  MemoEntry* FindMemo(PyObject* v) {
    if (memo_.size() <= kLinearMemo) {
      for (MemoEntry& e : memo_)
        if (e.obj == v) return &e;
      return nullptr;
    }
    auto it = memo_index_.find(v);
    return it == memo_index_.end() ? nullptr : &memo_[it->second];
  }

  KeyHasher& h_;
  int deepest_ = 0;
  std::vector<MemoEntry> memo_;
  absl::flat_hash_map<PyObject*, size_t> memo_index_;  // beyond kLinearMemo
  std::string arena_;
};

}  // namespace caudal::bindings::key_walk_internal

#endif  // CAUDAL_BINDINGS_KEY_WALKER_H_
