#include "caudal/hash/key_hasher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "caudal/hash/internal/wide_hash.h"

#define XXH_INLINE_ALL
#include "xxhash.h"

namespace caudal {
namespace {

// Fixed seeds: they are part of the key format. Changing the encoding of any
// token means changing kRootSeed too, so keys of different formats never meet
// (in Redis, for instance).
constexpr uint64_t kRootSeed = 0x63617564616c6b32ULL;      // "caudalk2"
constexpr uint64_t kElementSeed = 0x63617564616c6531ULL;   // "caudale1"
constexpr uint64_t kPayloadSeed = 0x63617564616c7031ULL;   // "caudalp1"
constexpr uint64_t kCollapseSeed = 0x63617564616c6331ULL;  // "caudalc1"
constexpr uint64_t kMix1 = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t kMix2 = 0xc2b2ae3d27d4eb4fULL;
constexpr uint64_t kMix3 = 0x165667b19e3779f9ULL;
constexpr uint64_t kMix4 = 0xd6e8feb86659fd93ULL;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// The 128-bit product of a and b, folded to 64 bits: non-linear in both
// inputs (one multiply, as in XXH3's own mixing).
inline uint64_t MulFold(uint64_t a, uint64_t b) {
  const XXH128_hash_t p = XXH_mult64to128(a, b);
  return p.low64 ^ p.high64;
}

// 128-bit digest of a byte run: the AVX2 wide hash for large runs, XXH3
// otherwise (the same choice for a key and for a summarised container).
hash_internal::Hash128 Digest(const char* p, size_t n, uint64_t seed) {
  if (n >= hash_internal::kWideHashMin) {
    return hash_internal::WideHash128(p, n, seed);
  }
  const XXH128_hash_t x = XXH3_128bits_withSeed(p, n, seed);
  return {x.low64, x.high64};
}

}  // namespace

std::string Key128::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[15 - i] = kDigits[(hi >> (4 * i)) & 0xf];
    out[31 - i] = kDigits[(lo >> (4 * i)) & 0xf];
  }
  return out;
}

KeyHasher::KeyHasher()
    : buf_(inline_buf_), frames_(inline_frames_), ends_(inline_ends_) {
  PushFrame(kRoot, kNoCount, 0);
}

KeyHasher::~KeyHasher() = default;

void KeyHasher::Reset() {
  size_ = 0;
  depth_ = 0;
  ends_size_ = 0;
  error_.clear();
  PushFrame(kRoot, kNoCount, 0);
}

void KeyHasher::Grow(size_t n) {
  const size_t new_cap = std::max(cap_ * 2, size_ + n);
  std::unique_ptr<char[]> bigger(new char[new_cap]);
  std::memcpy(bigger.get(), buf_, size_);
  heap_buf_ = std::move(bigger);
  buf_ = heap_buf_.get();
  cap_ = new_cap;
}

void KeyHasher::GrowEnds() {
  const size_t new_cap = ends_cap_ * 2;
  std::unique_ptr<size_t[]> bigger(new size_t[new_cap]);
  std::memcpy(bigger.get(), ends_, ends_size_ * sizeof(size_t));
  heap_ends_ = std::move(bigger);
  ends_ = heap_ends_.get();
  ends_cap_ = new_cap;
}

void KeyHasher::AddLargePayload(Tag large_tag, absl::string_view payload) {
  const hash_internal::Hash128 h =
      hash_internal::WideHash128(payload.data(), payload.size(), kPayloadSeed);
  char* p = Claim(1 + 8 + 16);
  p[0] = static_cast<char>(large_tag);
  Store64(p + 1, payload.size());
  Store64(p + 9, h.low64);
  Store64(p + 17, h.high64);
  ValueDone();
}

void KeyHasher::AddStringUnits(int unit_size, const void* units, size_t count) {
  if (unit_size != 1 && unit_size != 2 && unit_size != 4) {
    SetError(absl::StrCat("AddStringUnits: unit size ", unit_size,
                          " (must be 1, 2 or 4)"));
    return;
  }
  const size_t n = count * static_cast<size_t>(unit_size);
  hash_internal::Hash128 h;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if (unit_size != 1) {
    // Hash the units as little-endian, a chunk at a time (keys are the
    // same on every machine).
    XXH3_state_t state;
    XXH3_128bits_reset_withSeed(&state, kPayloadSeed);
    char chunk[4096];
    const char* p = static_cast<const char*>(units);
    for (size_t done = 0; done < n;) {
      const size_t len = std::min(sizeof(chunk), n - done);
      for (size_t i = 0; i < len; i += unit_size) {
        for (int b = 0; b < unit_size; ++b)
          chunk[i + b] = p[done + i + unit_size - 1 - b];
      }
      XXH3_128bits_update(&state, chunk, len);
      done += len;
    }
    const XXH128_hash_t x = XXH3_128bits_digest(&state);
    h = {x.low64, x.high64};
  } else {
    h = hash_internal::WideHash128(units, n, kPayloadSeed);
  }
#else
  h = hash_internal::WideHash128(units, n, kPayloadSeed);
#endif
  char* p = Claim(1 + 1 + 8 + 16);
  p[0] = static_cast<char>(kTagStrUnits);
  p[1] = static_cast<char>(unit_size);
  Store64(p + 2, count);
  Store64(p + 10, h.low64);
  Store64(p + 18, h.high64);
  ValueDone();
}

void KeyHasher::AddBigInt(absl::string_view little_endian_magnitude,
                          bool negative) {
  absl::string_view mag = little_endian_magnitude;
  while (!mag.empty() && mag.back() == '\0') mag.remove_suffix(1);
  if (mag.size() <= 8) {
    uint64_t m = 0;
    for (size_t i = 0; i < mag.size(); ++i) {
      m |= uint64_t{static_cast<unsigned char>(mag[i])} << (8 * i);
    }
    // Fits in int64_t: the same token as AddInt (so -0 is 0).
    if (!negative && m <= uint64_t{INT64_MAX}) {
      AddInt(static_cast<int64_t>(m));
      return;
    }
    if (negative && m <= uint64_t{INT64_MAX} + 1) {
      AddInt(static_cast<int64_t>(uint64_t{0} - m));
      return;
    }
  }
  // Canonical big int: sign byte, then the magnitude without high zeros.
  if (mag.size() > kLargePayload) {
    const XXH128_hash_t h =
        XXH3_128bits_withSeed(mag.data(), mag.size(), kPayloadSeed);
    char* p = Claim(2 + 8 + 16);
    p[0] = static_cast<char>(kTagBigIntLarge);
    p[1] = negative ? 1 : 0;
    Store64(p + 2, mag.size());
    Store64(p + 10, h.low64);
    Store64(p + 18, h.high64);
  } else {
    char* p = Claim(2 + 4 + mag.size());
    p[0] = static_cast<char>(kTagBigInt);
    p[1] = negative ? 1 : 0;
    Store32(p + 2, static_cast<uint32_t>(mag.size()));
    std::memcpy(p + 6, mag.data(), mag.size());
  }
  ValueDone();
}

void KeyHasher::AddRaw(uint8_t kind, absl::string_view payload) {
  const size_t n = payload.size();
  if (n > kLargePayload) {
    const XXH128_hash_t h =
        XXH3_128bits_withSeed(payload.data(), n, kPayloadSeed);
    char* p = Claim(2 + 8 + 16);
    p[0] = static_cast<char>(kTagRawLarge);
    p[1] = static_cast<char>(kind);
    Store64(p + 2, n);
    Store64(p + 10, h.low64);
    Store64(p + 18, h.high64);
  } else {
    char* p = Claim(2 + 4 + n);
    p[0] = static_cast<char>(kTagRaw);
    p[1] = static_cast<char>(kind);
    Store32(p + 2, static_cast<uint32_t>(n));
    if (n != 0) std::memcpy(p + 6, payload.data(), n);
  }
  ValueDone();
}

void KeyHasher::BeginObject(absl::string_view type_name) {
  // The type name is not a value of the object: write it as part of the
  // object's opening token rather than through AddString.
  const size_t begin = size_;
  const size_t n = type_name.size();
  if (n > kLargePayload) {
    const XXH128_hash_t h =
        XXH3_128bits_withSeed(type_name.data(), n, kPayloadSeed);
    char* p = Claim(1 + 4 + 16);
    p[0] = static_cast<char>(kTagObject);
    Store32(p + 1, 0xffffffffu);  // marks a digested name
    Store64(p + 5, h.low64);
    Store64(p + 13, h.high64);
  } else {
    char* p = Claim(1 + 4 + n);
    p[0] = static_cast<char>(kTagObject);
    Store32(p + 1, static_cast<uint32_t>(n));
    if (n != 0) std::memcpy(p + 5, type_name.data(), n);
  }
  PushFrame(kObject, kNoCount, begin);
}

void KeyHasher::EndOrdered(FrameKind kind, const char* what) {
  Frame& f = frames_[depth_ - 1];
  if (depth_ == 1 || f.kind != kind) {
    SetError(absl::StrCat("End", what, " without a matching Begin", what));
    return;
  }
  if (f.declared != kNoCount && f.count != f.declared) {
    SetError(absl::StrCat("Begin", what, " declared ", f.declared,
                          " elements but got ", f.count));
  }
  *Claim(1) = static_cast<char>(kTagEnd);
  const size_t begin = f.begin;
  --depth_;
  if (size_ - begin > kCollapseAbove) {
    // Summarise the container (see the header): its bytes become a digest.
    const hash_internal::Hash128 h =
        Digest(buf_ + begin, size_ - begin, kCollapseSeed);
    size_ = begin;
    char* p = Claim(1 + 16);
    p[0] = static_cast<char>(kTagDigest);
    Store64(p + 1, h.low64);
    Store64(p + 9, h.high64);
  }
  ValueDone();
}

void KeyHasher::EndDict() { EndUnordered(kDict, "Dict"); }

void KeyHasher::EndSet() {
  const FrameKind top = frames_[depth_ - 1].kind;
  EndUnordered(top == kFrozenSet ? kFrozenSet : kSet, "Set");
}

void KeyHasher::EndUnordered(FrameKind kind, const char* what) {
  Frame& f = frames_[depth_ - 1];
  if (depth_ == 1 || f.kind != kind) {
    SetError(absl::StrCat("End", what, " without a matching Begin", what));
    return;
  }
  size_t elements = f.count;
  if (kind == kDict) {
    if ((f.count & 1) != 0) SetError("dict ended after a key with no value");
    elements = f.count / 2;  // a dangling key is dropped
  }
  if (f.declared != kNoCount && elements != f.declared) {
    SetError(absl::StrCat("Begin", what, " declared ", f.declared,
                          " elements but got ", elements));
  }
  const Tag tag = kind == kDict  ? kTagDict
                  : kind == kSet ? kTagSet
                                 : kTagFrozenSet;
  // Combine the element digests commutatively (see the header): A is the
  // lane-wise wrapping sum of the digests, B that of a non-linear mix of them.
  uint64_t sum_lo = 0, sum_hi = 0, mix_lo = 0, mix_hi = 0;
  size_t begin = f.start;
  for (size_t i = f.ends_base; i < ends_size_; ++i) {
    const size_t end = ends_[i];
    const XXH128_hash_t h =
        XXH3_128bits_withSeed(buf_ + begin, end - begin, kElementSeed);
    begin = end;
    sum_lo += h.low64;
    sum_hi += h.high64;
    mix_lo += MulFold(h.low64 ^ kMix1, h.high64 ^ kMix2);
    mix_hi += MulFold(h.low64 ^ kMix3, Rotl(h.high64, 32) ^ kMix4);
  }
  ends_size_ = f.ends_base;
  // Replace the element region by the container's fixed-size token.
  size_ = f.start;
  char* p = Claim(1 + 8 + 32);
  p[0] = static_cast<char>(tag);
  Store64(p + 1, elements);
  Store64(p + 9, sum_lo);
  Store64(p + 17, sum_hi);
  Store64(p + 25, mix_lo);
  Store64(p + 33, mix_hi);
  --depth_;
  ValueDone();
}

Key128 KeyHasher::Finish() {
  if (depth_ != 1) {
    SetError(absl::StrCat("Finish with ", depth_ - 1, " unclosed containers"));
  }
  const hash_internal::Hash128 h = Digest(buf_, size_, kRootSeed);
  Key128 key;
  key.lo = h.low64;
  key.hi = h.high64;
  return key;
}

absl::Status KeyHasher::status() const {
  if (error_.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("KeyHasher: ", error_));
}

void KeyHasher::SetError(std::string message) {
  if (error_.empty()) error_ = std::move(message);
}

}  // namespace caudal
