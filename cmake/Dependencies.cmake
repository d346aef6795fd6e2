# Third-party dependencies, from the system's packages:
#
#   what            Debian / Ubuntu                     Homebrew
#   Abseil          libabsl-dev                         abseil
#   nlohmann_json   nlohmann-json3-dev                  nlohmann-json
#   xxHash          libxxhash-dev                       xxhash
#   zstd            libzstd-dev                         zstd
#   GoogleTest      libgtest-dev libgmock-dev           googletest   (tests only)
#
# A missing one stops the configure step at once with a message naming the
# packages; nothing is downloaded unless CAUDAL_FETCH_DEPS is ON (then
# pinned releases of Abseil, nlohmann_json, xxHash and GoogleTest are
# fetched from github.com; zstd always comes from the system).
#
# CAUDAL_STATIC_DEPS links zstd into the extension (what `make wheels`
# does). Abseil stays a shared library there: Debian's
# static archives are not position-independent (their thread-locals use the
# executable-only TLS model), so `auditwheel repair` copies the shared ones
# into the wheel instead. A fetched Abseil (CAUDAL_FETCH_DEPS, no system
# Abseil) is built static and position-independent.
include(FetchContent)

option(CAUDAL_FETCH_DEPS
  "Download pinned releases of the dependencies the system lacks (needs github.com)" OFF)
option(CAUDAL_STATIC_DEPS
  "Link zstd statically into the extension (self-contained wheels)" OFF)

set(_caudal_missing_what "")
set(_caudal_missing_deb "")
set(_caudal_missing_brew "")
macro(_caudal_missing what deb brew)
  list(APPEND _caudal_missing_what "${what}")
  list(APPEND _caudal_missing_deb ${deb})
  list(APPEND _caudal_missing_brew ${brew})
endmacro()

# Without a download, FetchContent must never reach the network.
if(NOT CAUDAL_FETCH_DEPS)
  set(FETCHCONTENT_FULLY_DISCONNECTED ON)
endif()

find_package(absl CONFIG QUIET)
if(NOT absl_FOUND)
  if(CAUDAL_FETCH_DEPS)
    message(STATUS "caudal: Abseil not found on the system; fetching a pinned release")
    set(ABSL_PROPAGATE_CXX_STD ON)
    set(ABSL_ENABLE_INSTALL OFF)
    FetchContent_Declare(absl
      URL https://github.com/abseil/abseil-cpp/archive/refs/tags/20240722.0.tar.gz
      URL_HASH SHA256=f50e5ac311a81382da7fa75b97310e4b9006474f9560ac46f54a9967f07d4ae3)
    FetchContent_MakeAvailable(absl)
  else()
    _caudal_missing("Abseil" libabsl-dev abseil)
  endif()
endif()

find_package(nlohmann_json 3.10 CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  if(CAUDAL_FETCH_DEPS)
    message(STATUS "caudal: nlohmann_json not found on the system; fetching a pinned release")
    FetchContent_Declare(nlohmann_json
      URL https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz
      URL_HASH SHA256=d6c65aca6b1ed68e7a182f4757257b107ae403032760ed6ef121c9d55e81757d)
    FetchContent_MakeAvailable(nlohmann_json)
  else()
    _caudal_missing("nlohmann_json >= 3.10" nlohmann-json3-dev nlohmann-json)
  endif()
endif()

# xxHash: header-only use (XXH_INLINE_ALL), so only the header is needed.
find_path(XXHASH_INCLUDE_DIR xxhash.h)
if(NOT XXHASH_INCLUDE_DIR)
  if(CAUDAL_FETCH_DEPS)
    message(STATUS "caudal: xxhash.h not found on the system; fetching a pinned release")
    FetchContent_Declare(xxhash
      URL https://github.com/Cyan4973/xxHash/archive/refs/tags/v0.8.2.tar.gz
      URL_HASH SHA256=baee0c6afd4f03165de7a4e67988d16f0f2b257b51d0e3cb91909302a26a79c4)
    FetchContent_MakeAvailable(xxhash)
    set(XXHASH_INCLUDE_DIR ${xxhash_SOURCE_DIR})
  else()
    _caudal_missing("xxHash" libxxhash-dev xxhash)
  endif()
endif()

find_package(zstd CONFIG QUIET)
# The static library when asked for (wheels) or when it is the only one.
if(TARGET zstd::libzstd_static AND (CAUDAL_STATIC_DEPS OR NOT TARGET zstd::libzstd_shared))
  set(CAUDAL_ZSTD_TARGET zstd::libzstd_static)
elseif(TARGET zstd::libzstd_shared AND NOT CAUDAL_STATIC_DEPS)
  set(CAUDAL_ZSTD_TARGET zstd::libzstd_shared)
else()
  if(CAUDAL_STATIC_DEPS)
    find_library(ZSTD_LIBRARY NAMES libzstd.a)
  else()
    find_library(ZSTD_LIBRARY zstd)
  endif()
  find_path(ZSTD_INCLUDE_DIR zstd.h)
  if(ZSTD_LIBRARY AND ZSTD_INCLUDE_DIR)
    add_library(caudal_zstd INTERFACE)
    target_link_libraries(caudal_zstd INTERFACE ${ZSTD_LIBRARY})
    target_include_directories(caudal_zstd INTERFACE ${ZSTD_INCLUDE_DIR})
    set(CAUDAL_ZSTD_TARGET caudal_zstd)
  elseif(CAUDAL_STATIC_DEPS)
    _caudal_missing("zstd (its static library, libzstd.a)" libzstd-dev zstd)
  else()
    _caudal_missing("zstd" libzstd-dev zstd)
  endif()
endif()

if(BUILD_TESTING)
  find_package(GTest CONFIG QUIET)
  if(NOT GTest_FOUND)
    if(CAUDAL_FETCH_DEPS)
      message(STATUS "caudal: GoogleTest not found on the system; fetching a pinned release")
      set(INSTALL_GTEST OFF)
      FetchContent_Declare(googletest
        URL https://github.com/google/googletest/archive/refs/tags/v1.14.0.tar.gz
        URL_HASH SHA256=8ad598c73ad796e0d8280b082cebd82a630d73e73cd3c70057938a6501bba5d7)
      FetchContent_MakeAvailable(googletest)
    else()
      _caudal_missing("GoogleTest (BUILD_TESTING=ON)" "libgtest-dev;libgmock-dev" googletest)
    endif()
  endif()
endif()

if(_caudal_missing_what)
  list(JOIN _caudal_missing_what ", " _what)
  list(JOIN _caudal_missing_deb " " _deb)
  list(JOIN _caudal_missing_brew " " _brew)
  message(FATAL_ERROR
    "caudal: building from source needs ${_what}, not found on this machine.\n"
    "  Debian/Ubuntu:  sudo apt-get install -y g++ ${_deb}\n"
    "  macOS:          brew install ${_brew}\n"
    "Or configure with -DCAUDAL_FETCH_DEPS=ON to download pinned releases from "
    "github.com (zstd always comes from the system). A prebuilt wheel needs none "
    "of this: docs/executor.md, \"Install\".")
endif()
