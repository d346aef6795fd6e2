// KeyHasher: 128-bit cache keys from a stream of typed tokens.
//
// The bindings walk a Python value (a step's input) and describe it to a
// KeyHasher token by token: AddInt(3), BeginList(2) ... EndList(), and so on.
// Finish() returns a Key128 that is equal for equal values (under the rules
// below) and, with overwhelming probability, different for different ones.
// Keys are stable across processes, runs and machines (a fixed seed,
// little-endian encoding, XXH3 whose output is frozen since xxHash 0.8.0),
// because they are shared between processes through Redis.
//
// Equality rules (what counts as "the same input"):
//   * Types matter. None, bool, int, float, str, bytes, list, tuple, dict,
//     set, frozenset and each object type are distinct: 1, 1.0 and True are
//     three different keys; "a" and b"a" differ; [1, 2] and (1, 2) differ;
//     {1} and frozenset({1}) differ. (Python says 1 == 1.0 == True; a cache
//     is conservative instead: a false miss costs a recomputation, a false
//     hit returns a result of the wrong type.)
//   * int: by value. AddInt(v) and AddBigInt(bytes of v) give the same key,
//     so the bindings may use either for integers that fit in 64 bits.
//   * float: by value, with -0.0 == 0.0 and every NaN equal to every other
//     NaN (so a NaN input can be cached at all).
//   * str: by its code points (no Unicode normalisation, as in Python),
//     written as UTF-8 (AddString), or, for a long non-ASCII str, as its
//     fixed-width code units (AddStringUnits: no encoding pass). Which form
//     a str takes must be a function of its value (the bindings: code
//     units when the str is not ASCII and its storage exceeds
//     kLargePayload); the two forms have different tags, so a str never
//     shares a key with another str or with bytes.
//   * dict: a set of (key, value) pairs; insertion order is ignored.
//     set / frozenset: order is ignored.
//   * list, tuple, object fields and the top-level token sequence: ordered.
//   * object: the type's name (the bindings pass a digest of the class's
//     identity), then its fields in the order the walk emits them.
//
// Design. Tokens are appended as compact bytes to one buffer (inline up to
// 512 bytes, then a heap buffer that is kept across Reset()), and the buffer
// is hashed once by XXH3-128 in Finish(). Every token is self-delimiting: a
// one-byte type tag followed by a fixed-size payload or a length and the
// bytes; ordered containers are bracketed by a begin tag and an end tag. So
// two different token streams always give two different byte strings, and
// the only source of collisions is the hash itself ("12" vs 12 vs [12] vs
// ["1", "2"] cannot be confused). Strings, bytes and big ints longer than
// 4 KiB are not copied: their XXH3-128 digest and length are appended.
//
// Large ordered containers are summarised: when a list, tuple or object ends
// and its bytes (begin token to end token) exceed kCollapseAbove, they are
// hashed (XXH3-128, their own seed) and replaced by one fixed-size digest
// token. The rule depends only on the bytes, so it is part of the encoding of
// a value: a value has one encoding whatever surrounds it, and that encoding
// is never longer than kCollapseAbove + a few bytes. This is what lets the
// bindings replay a value they met before (AddReplay) at a bounded cost,
// which keeps a walk linear in the distinct objects of an input that shares
// sub-values: [x, x] nested 40 deep is 41 objects but 2^40 paths.
//
// Unordered containers (dict, set, frozenset) are hashed element by element:
// each element's tokens (for a dict: key then value) are written into the
// buffer and its end offset is noted; when the container ends, each element
// is hashed into a 128-bit digest h with a separate seed, the digests are
// combined commutatively into two 128-bit accumulators, per 64-bit lane with
// wrapping addition,
//     A += h            B += M(h)
// where M(h) is two folded 64x64->128-bit products of the (keyed) lanes of
// h, a non-linear function of both lanes, and the elements' bytes are
// replaced by one fixed-size token: tag, element count, A, B. (Nested
// unordered containers have already collapsed into such tokens by then.)
// Why this shape: addition is commutative and associative, so any order gives
// the same token. XOR would make pairs cancel ({x, x} == {}); a wrapping sum
// does not, and the count is hashed too. A plain sum is linear, so
// h(a) + h(b) == h(c) + h(d) is a single equation that a structured family of
// inputs might satisfy; B, a sum of a non-linear function of the same
// digests, must then be equal as well, which linear relations do not carry
// over to. For non-adversarial inputs two different multisets of the same size
// collide with probability about 2^-128. Nothing here is cryptographic: XXH3
// with a public seed offers no protection against deliberately crafted
// collisions, and keys must not be used where an attacker chooses inputs
// to poison someone else's results.
//
// Cost: about one byte copy per input byte plus one XXH3 call per key, one
// per unordered element and one per summarised container; no allocation in the
// steady state (inline buffers, or heap buffers reused across Reset()).
// Measured on the shared 2-core development VM: a dict of five short str -> int
// items, ~80 ns per key; a name plus a tuple of five short strings plus an int,
// ~35 ns.
//
// Usage contract: containers must be closed in order and with the element
// count declared at Begin (for dicts: the number of items, fed as key, value,
// key, value ...). Misuse does not crash; it is recorded and reported by ok()
// and status(), and the key returned by Finish() is then meaningless. The
// bindings should check ok() once after Finish().
//
// Thread-safety: a KeyHasher is used by one thread at a time (keep one per
// thread, or one on the stack per key). It is neither copyable nor movable.
#ifndef CAUDAL_HASH_KEY_HASHER_H_
#define CAUDAL_HASH_KEY_HASHER_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "caudal/hash/key128.h"

namespace caudal {

class KeyHasher {
 public:
  // Payloads (str, bytes, raw, big int magnitude) longer than this are
  // replaced in the stream by their length and XXH3-128 digest.
  static constexpr size_t kLargePayload = 4096;

  KeyHasher();
  KeyHasher(const KeyHasher&) = delete;
  KeyHasher& operator=(const KeyHasher&) = delete;
  ~KeyHasher();

  // Forgets all tokens and any recorded misuse; keeps the buffers.
  void Reset();

  // Scalars.
  void AddNone();
  void AddBool(bool value);
  void AddInt(int64_t value);
  // An integer of any size: magnitude as little-endian bytes (high zero bytes
  // allowed) and a sign. Integers that fit in int64_t hash like AddInt().
  void AddBigInt(absl::string_view little_endian_magnitude, bool negative);
  void AddFloat(double value);
  void AddString(absl::string_view utf8);
  // A str as its code units: `count` units of `unit_size` bytes (1, 2 or 4:
  // Latin-1, UCS-2, UCS-4) in host byte order at `units`. Always digested
  // (tag, unit size, count, XXH3-128 of the units as little-endian), so it
  // is meant for long strings; equal code points in the same unit size
  // give the same token, and no other token equals it.
  void AddStringUnits(int unit_size, const void* units, size_t count);
  void AddBytes(absl::string_view bytes);
  // Anything else the walk can serialise itself (datetime, Decimal, UUID,
  // a precomputed digest ...). `kind` is chosen by the caller and keeps
  // different kinds apart: AddRaw(1, "x") != AddRaw(2, "x"), and no raw token
  // equals a token of another type.
  void AddRaw(uint8_t kind, absl::string_view payload);

  // Ordered containers; `n` is the number of elements that will follow.
  void BeginList(size_t n);
  void EndList();
  void BeginTuple(size_t n);
  void EndTuple();
  // Unordered containers. A dict of `n` items is fed as 2n values that
  // alternate key, value, key, value ...
  void BeginDict(size_t n);
  void EndDict();
  void BeginSet(size_t n, bool frozen);
  void EndSet();
  // An object of a named type; its fields (any tokens, e.g. name, value,
  // name, value) follow in a fixed order until EndObject().
  void BeginObject(absl::string_view type_name);
  void EndObject();

  // Replaying a value met before. Mark() is the position before a value's
  // first token; once the value is complete (a scalar added, or its container
  // ended), Since(mark) is its encoding: a view into the buffer, valid until
  // the next call that adds tokens. AddReplay(encoding) appends such an
  // encoding again as one complete value, with the same effect on the key as
  // adding its tokens again. Only encodings obtained from Since() for one
  // complete value may be replayed; anything else makes the key meaningless.
  size_t Mark() const { return size_; }
  absl::string_view Since(size_t mark) const {
    return absl::string_view(buf_ + mark, size_ - mark);
  }
  void AddReplay(absl::string_view encoding);

  // Ordered containers whose encoding exceeds this many bytes are replaced
  // by a digest token when they end (see the design note above).
  static constexpr size_t kCollapseAbove = 1024;

  // The key of the tokens added since construction or the last Reset().
  // Does not change the state: more tokens may be added and Finish() called
  // again. All containers must be closed.
  Key128 Finish();

  // False after misuse (unbalanced or mismatched End, wrong element count,
  // Finish with open containers); status() says what went wrong first.
  bool ok() const { return error_.empty(); }
  absl::Status status() const;

  // Containers currently open.
  size_t depth() const { return depth_ - 1; }

 private:
  enum Tag : uint8_t {
    kTagNone = 0x01,
    kTagFalse = 0x02,
    kTagTrue = 0x03,
    kTagInt = 0x04,
    kTagBigInt = 0x05,
    kTagBigIntLarge = 0x06,
    kTagFloat = 0x07,
    kTagStr = 0x08,
    kTagStrLarge = 0x09,
    kTagBytes = 0x0a,
    kTagBytesLarge = 0x0b,
    kTagRaw = 0x0c,
    kTagRawLarge = 0x0d,
    kTagStrUnits = 0x0e,  // unit size, count, digest (AddStringUnits)
    kTagList = 0x10,
    kTagTuple = 0x11,
    kTagObject = 0x12,
    kTagDigest = 0x13,  // a collapsed ordered container
    kTagEnd = 0x1f,
    kTagDict = 0x20,
    kTagSet = 0x21,
    kTagFrozenSet = 0x22,
  };

  enum FrameKind : uint8_t {
    kRoot,
    kList,
    kTuple,
    kObject,
    // Unordered kinds last: kind >= kFirstUnordered.
    kDict,
    kSet,
    kFrozenSet,
  };
  static constexpr uint8_t kFirstUnordered = kDict;
  static constexpr size_t kNoCount = ~size_t{0};

  struct Frame {
    FrameKind kind;
    size_t declared;   // elements (dict: items) announced at Begin
    size_t count;      // values completed directly inside this frame
    size_t begin;      // buffer offset of the container's first token
    size_t start;      // unordered: buffer offset of the element region
    size_t ends_base;  // unordered: first index of its element ends in ends_
  };

  static constexpr size_t kInlineBytes = 512;
  static constexpr size_t kInlineFrames = 16;
  static constexpr size_t kInlineEnds = 64;

  // Returns room for n more bytes at the end of the buffer and claims it.
  char* Claim(size_t n) {
    if (cap_ - size_ < n) Grow(n);
    char* p = buf_ + size_;
    size_ += n;
    return p;
  }
  void Grow(size_t n);
  void PushFrame(FrameKind kind, size_t declared, size_t begin);
  // One value (scalar or closed container) was completed in the top frame.
  // In an unordered frame, a completed element only has its end offset
  // recorded; the elements are hashed together when the container ends.
  // (Hashing bytes right after writing them would make XXH3's wide loads
  // wait on the narrow stores that wrote them; deferring avoids the stall.)
  void ValueDone() {
    Frame& f = frames_[depth_ - 1];
    ++f.count;
    if (f.kind >= kFirstUnordered) {
      if (f.kind == kDict && (f.count & 1) != 0) return;  // key, await value
      if (ends_size_ == ends_cap_) GrowEnds();
      ends_[ends_size_++] = size_;
    }
  }
  void GrowEnds();
  void AddPayload(Tag tag, Tag large_tag, absl::string_view payload);
  void AddLargePayload(Tag large_tag, absl::string_view payload);
  void EndOrdered(FrameKind kind, const char* what);
  void EndUnordered(FrameKind kind, const char* what);
  void SetError(std::string message);

  static void Store32(char* p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    std::memcpy(p, &v, 4);
  }
  static void Store64(char* p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    std::memcpy(p, &v, 8);
  }

  char* buf_;
  size_t size_ = 0;
  size_t cap_ = kInlineBytes;
  Frame* frames_;
  size_t depth_ = 0;  // frames in use, including the root frame
  size_t frame_cap_ = kInlineFrames;
  // Buffer offsets where the pending elements of open unordered containers
  // end, innermost container last (a stack shared by all frames).
  size_t* ends_;
  size_t ends_size_ = 0;
  size_t ends_cap_ = kInlineEnds;
  std::unique_ptr<char[]> heap_buf_;
  std::unique_ptr<Frame[]> heap_frames_;
  std::unique_ptr<size_t[]> heap_ends_;
  std::string error_;  // empty while ok
  Frame inline_frames_[kInlineFrames];
  size_t inline_ends_[kInlineEnds];
  char inline_buf_[kInlineBytes];
};

// ---------------------------------------------------------------------------
// Inline definitions of the per-token calls: the walk makes one call per
// token, so these are kept inlinable (a call across translation units would
// cost as much as the token itself).

inline void KeyHasher::AddNone() {
  *Claim(1) = static_cast<char>(kTagNone);
  ValueDone();
}

inline void KeyHasher::AddBool(bool value) {
  *Claim(1) = static_cast<char>(value ? kTagTrue : kTagFalse);
  ValueDone();
}

inline void KeyHasher::AddInt(int64_t value) {
  char* p = Claim(9);
  p[0] = static_cast<char>(kTagInt);
  Store64(p + 1, static_cast<uint64_t>(value));
  ValueDone();
}

inline void KeyHasher::AddFloat(double value) {
  uint64_t bits;
  if (value != value) {
    bits = 0x7ff8000000000000ULL;  // the one canonical quiet NaN
  } else {
    if (value == 0.0) value = 0.0;  // -0.0 -> +0.0
    std::memcpy(&bits, &value, 8);
  }
  char* p = Claim(9);
  p[0] = static_cast<char>(kTagFloat);
  Store64(p + 1, bits);
  ValueDone();
}

inline void KeyHasher::AddPayload(Tag tag, Tag large_tag,
                                  absl::string_view payload) {
  const size_t n = payload.size();
  if (n > kLargePayload) {
    AddLargePayload(large_tag, payload);
    return;
  }
  char* p = Claim(5 + n);
  p[0] = static_cast<char>(tag);
  Store32(p + 1, static_cast<uint32_t>(n));
  if (n != 0) std::memcpy(p + 5, payload.data(), n);
  ValueDone();
}

inline void KeyHasher::AddString(absl::string_view utf8) {
  AddPayload(kTagStr, kTagStrLarge, utf8);
}

inline void KeyHasher::AddBytes(absl::string_view bytes) {
  AddPayload(kTagBytes, kTagBytesLarge, bytes);
}

inline void KeyHasher::BeginList(size_t n) {
  *Claim(1) = static_cast<char>(kTagList);
  PushFrame(kList, n, size_ - 1);
}

inline void KeyHasher::BeginTuple(size_t n) {
  *Claim(1) = static_cast<char>(kTagTuple);
  PushFrame(kTuple, n, size_ - 1);
}

inline void KeyHasher::BeginDict(size_t n) { PushFrame(kDict, n, size_); }

inline void KeyHasher::BeginSet(size_t n, bool frozen) {
  PushFrame(frozen ? kFrozenSet : kSet, n, size_);
}

inline void KeyHasher::PushFrame(FrameKind kind, size_t declared,
                                 size_t begin) {
  if (depth_ == frame_cap_) {
    // Deep nesting: move the frames to a larger heap array (kept on Reset).
    const size_t new_cap = frame_cap_ * 2;
    std::unique_ptr<Frame[]> bigger(new Frame[new_cap]);
    std::memcpy(static_cast<void*>(bigger.get()), frames_,
                depth_ * sizeof(Frame));
    heap_frames_ = std::move(bigger);
    frames_ = heap_frames_.get();
    frame_cap_ = new_cap;
  }
  Frame& f = frames_[depth_++];
  f.kind = kind;
  f.declared = declared;
  f.count = 0;
  f.begin = begin;
  f.start = size_;
  f.ends_base = ends_size_;
}

inline void KeyHasher::AddReplay(absl::string_view encoding) {
  const size_t n = encoding.size();
  if (n != 0) std::memcpy(Claim(n), encoding.data(), n);
  ValueDone();
}

inline void KeyHasher::EndList() { EndOrdered(kList, "List"); }
inline void KeyHasher::EndTuple() { EndOrdered(kTuple, "Tuple"); }
inline void KeyHasher::EndObject() { EndOrdered(kObject, "Object"); }

}  // namespace caudal

#endif  // CAUDAL_HASH_KEY_HASHER_H_
