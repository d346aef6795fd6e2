# Third-party dependencies: the system's packages first (Debian: libabsl-dev,
# nlohmann-json3-dev, libgtest-dev, libgmock-dev, libxxhash-dev,
# libzstd-dev); a pinned FetchContent fallback for machines that lack them.
include(FetchContent)

find_package(absl CONFIG QUIET)
if(NOT absl_FOUND)
  message(STATUS "caudal: Abseil not found on the system; fetching a pinned release")
  set(ABSL_PROPAGATE_CXX_STD ON)
  set(ABSL_ENABLE_INSTALL OFF)
  FetchContent_Declare(absl
    URL https://github.com/abseil/abseil-cpp/archive/refs/tags/20240722.0.tar.gz
    URL_HASH SHA256=f50e5ac311a81382da7fa75b97310e4b9006474f9560ac46f54a9967f07d4ae3)
  FetchContent_MakeAvailable(absl)
endif()

find_package(nlohmann_json 3.10 CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  message(STATUS "caudal: nlohmann_json not found on the system; fetching a pinned release")
  FetchContent_Declare(nlohmann_json
    URL https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz
    URL_HASH SHA256=d6c65aca6b1ed68e7a182f4757257b107ae403032760ed6ef121c9d55e81757d)
  FetchContent_MakeAvailable(nlohmann_json)
endif()

# xxHash: header-only use (XXH_INLINE_ALL), so only the header is needed.
find_path(XXHASH_INCLUDE_DIR xxhash.h)
if(NOT XXHASH_INCLUDE_DIR)
  message(STATUS "caudal: xxhash.h not found on the system; fetching a pinned release")
  FetchContent_Declare(xxhash
    URL https://github.com/Cyan4973/xxHash/archive/refs/tags/v0.8.2.tar.gz
    URL_HASH SHA256=baee0c6afd4f03165de7a4e67988d16f0f2b257b51d0e3cb91909302a26a79c4)
  FetchContent_MakeAvailable(xxhash)
  set(XXHASH_INCLUDE_DIR ${xxhash_SOURCE_DIR})
endif()

find_package(zstd CONFIG QUIET)
if(TARGET zstd::libzstd_shared)
  set(CAUDAL_ZSTD_TARGET zstd::libzstd_shared)
elseif(TARGET zstd::libzstd_static)
  set(CAUDAL_ZSTD_TARGET zstd::libzstd_static)
else()
  find_library(ZSTD_LIBRARY zstd REQUIRED)
  find_path(ZSTD_INCLUDE_DIR zstd.h REQUIRED)
  add_library(caudal_zstd INTERFACE)
  target_link_libraries(caudal_zstd INTERFACE ${ZSTD_LIBRARY})
  target_include_directories(caudal_zstd INTERFACE ${ZSTD_INCLUDE_DIR})
  set(CAUDAL_ZSTD_TARGET caudal_zstd)
endif()

if(BUILD_TESTING)
  find_package(GTest CONFIG QUIET)
  if(NOT GTest_FOUND)
    message(STATUS "caudal: GoogleTest not found on the system; fetching a pinned release")
    set(INSTALL_GTEST OFF)
    FetchContent_Declare(googletest
      URL https://github.com/google/googletest/archive/refs/tags/v1.14.0.tar.gz
      URL_HASH SHA256=8ad598c73ad796e0d8280b082cebd82a630d73e73cd3c70057938a6501bba5d7)
    FetchContent_MakeAvailable(googletest)
  endif()
endif()
