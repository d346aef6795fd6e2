// Compression of cache entries for the shared (Redis) tier.
//
// A stored entry is a "frame": one header byte, then the payload.
//   0xC0  raw: the payload is the data itself.
//   0xC1  zstd: the payload is exactly one zstd frame, with its content size
//         and a content checksum.
// (0xC0 and 0xC1 never occur in UTF-8 and pickles start with 0x80, so text or
// a pickled value read by mistake is rejected rather than misread.)
//
// CompressIfLarger() compresses only data longer than a threshold, and keeps
// the raw form when zstd does not make it smaller, so small or incompressible
// values cost one byte and a copy. Decompress() accepts only well-formed
// frames: it checks the header byte, the zstd magic number, that the payload
// is one complete zstd frame with nothing after it, the declared size
// against a limit (before allocating), the decoded size and the checksum,
// and reports any failure as a status. It never crashes or over-allocates on
// garbage. Raw frames carry no checksum; transport integrity is Redis's.
//
// Thread-safety: both functions are thread-safe; each thread reuses its own
// zstd contexts.
#ifndef CAUDAL_CACHE_COMPRESSION_H_
#define CAUDAL_CACHE_COMPRESSION_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace caudal {

inline constexpr uint8_t kFrameRaw = 0xC0;
inline constexpr uint8_t kFrameZstd = 0xC1;

// Default limit on the decompressed size accepted by Decompress.
inline constexpr size_t kDefaultMaxDecompressedBytes = size_t{1} << 30;

// Frames `data`: zstd at `level` (clamped to zstd's range) when data is
// longer than `threshold` bytes and compression makes it smaller, raw
// otherwise. Never fails (a zstd error falls back to raw).
std::string CompressIfLarger(absl::string_view data, size_t threshold,
                             int level);

// The data of a frame made by CompressIfLarger. kDataLoss for anything
// malformed (empty, unknown header, corrupt or truncated zstd frame, trailing
// bytes, checksum mismatch); kResourceExhausted when the frame declares more
// than `max_bytes` of output.
absl::StatusOr<std::string> Decompress(
    absl::string_view framed, size_t max_bytes = kDefaultMaxDecompressedBytes);

// True if `framed` is a zstd frame (by its header byte only).
bool IsCompressedFrame(absl::string_view framed);

}  // namespace caudal

#endif  // CAUDAL_CACHE_COMPRESSION_H_
