#include "caudal/cache/compression.h"

#include <algorithm>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "zstd.h"

namespace caudal {
namespace {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  return cctx.get();
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  return dctx.get();
}

std::string RawFrame(absl::string_view data) {
  std::string out;
  out.reserve(1 + data.size());
  out.push_back(static_cast<char>(kFrameRaw));
  out.append(data.data(), data.size());
  return out;
}

}  // namespace

std::string CompressIfLarger(absl::string_view data, size_t threshold,
                             int level) {
  if (data.size() <= threshold || data.empty()) return RawFrame(data);
  ZSTD_CCtx* cctx = ThreadCCtx();
  if (cctx == nullptr) return RawFrame(data);
  level = std::clamp(level, ZSTD_minCLevel(), ZSTD_maxCLevel());
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  if (ZSTD_isError(
          ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1))) {
    return RawFrame(data);
  }
  // Only a result smaller than the data is worth keeping: give zstd exactly
  // that much room and fall back to raw if it does not fit.
  std::string out(data.size(), '\0');
  out[0] = static_cast<char>(kFrameZstd);
  const size_t n =
      ZSTD_compress2(cctx, &out[1], data.size() - 1, data.data(), data.size());
  if (ZSTD_isError(n)) return RawFrame(data);
  out.resize(1 + n);
  return out;
}

absl::StatusOr<std::string> Decompress(absl::string_view framed,
                                       size_t max_bytes) {
  if (framed.empty()) return absl::DataLossError("empty cache frame");
  const uint8_t header = static_cast<uint8_t>(framed[0]);
  const absl::string_view payload = framed.substr(1);
  if (header == kFrameRaw) return std::string(payload);
  if (header != kFrameZstd) {
    return absl::DataLossError(absl::StrFormat(
        "unknown cache frame header byte 0x%02x (expected 0x%02x raw or "
        "0x%02x zstd)",
        header, kFrameRaw, kFrameZstd));
  }
  if (payload.size() < 4 ||
      static_cast<uint32_t>(static_cast<uint8_t>(payload[0])) +
              (static_cast<uint32_t>(static_cast<uint8_t>(payload[1])) << 8) +
              (static_cast<uint32_t>(static_cast<uint8_t>(payload[2])) << 16) +
              (static_cast<uint32_t>(static_cast<uint8_t>(payload[3])) << 24) !=
          ZSTD_MAGICNUMBER) {
    return absl::DataLossError("zstd cache frame lacks the zstd magic number");
  }
  const size_t frame_size =
      ZSTD_findFrameCompressedSize(payload.data(), payload.size());
  if (ZSTD_isError(frame_size)) {
    return absl::DataLossError(absl::StrCat("corrupt zstd cache frame: ",
                                            ZSTD_getErrorName(frame_size)));
  }
  if (frame_size != payload.size()) {
    return absl::DataLossError(absl::StrCat("zstd cache frame is followed by ",
                                            payload.size() - frame_size,
                                            " unexpected bytes"));
  }
  const unsigned long long declared =
      ZSTD_getFrameContentSize(payload.data(), payload.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    return absl::DataLossError("corrupt zstd cache frame header");
  }
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) {
    return absl::DataLossError("zstd cache frame does not declare its size");
  }
  if (declared > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("zstd cache frame declares ", declared,
                     " bytes, more than the limit of ", max_bytes));
  }
  ZSTD_DCtx* dctx = ThreadDCtx();
  if (dctx == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate a zstd context");
  }
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters);
  std::string out(static_cast<size_t>(declared), '\0');
  const size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(),
                                       payload.data(), payload.size());
  if (ZSTD_isError(n)) {
    return absl::DataLossError(
        absl::StrCat("corrupt zstd cache frame: ", ZSTD_getErrorName(n)));
  }
  if (n != out.size()) {
    return absl::DataLossError(absl::StrCat("zstd cache frame decoded to ", n,
                                            " bytes, declared ", out.size()));
  }
  return out;
}

bool IsCompressedFrame(absl::string_view framed) {
  return !framed.empty() && static_cast<uint8_t>(framed[0]) == kFrameZstd;
}

}  // namespace caudal
