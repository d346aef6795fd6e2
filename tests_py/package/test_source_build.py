"""A source build on a machine without the C++ dependencies stops at once,
naming the packages to install, and downloads nothing unless asked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cmake() -> str:
    found = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    if not found:
        pytest.fail("cmake is not installed (make deps installs it into .venv)")
    return found


def _configure(tmp_path: Path, *defines: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _cmake(),
            "-S",
            str(REPO),
            "-B",
            str(tmp_path / "build"),
            "-DCAUDAL_BUILD_PYTHON=OFF",
            "-DBUILD_TESTING=OFF",
            *defines,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_dependencies_fail_fast_naming_the_packages(tmp_path):
    p = _configure(
        tmp_path,
        # As on a machine without Abseil and zstd.
        "-DCMAKE_DISABLE_FIND_PACKAGE_absl=ON",
        "-DCMAKE_DISABLE_FIND_PACKAGE_zstd=ON",
        "-DZSTD_LIBRARY=ZSTD_LIBRARY-NOTFOUND",
        "-DZSTD_INCLUDE_DIR=ZSTD_INCLUDE_DIR-NOTFOUND",
    )
    assert p.returncode != 0
    err = " ".join(p.stderr.split())  # CMake wraps its messages
    assert "needs Abseil, zstd, not found on this machine" in err, p.stderr
    assert "sudo apt-get install -y g++ libabsl-dev libzstd-dev" in err, p.stderr
    assert "brew install abseil zstd" in err, p.stderr
    assert "CAUDAL_FETCH_DEPS=ON" in err, p.stderr
    # Nothing was downloaded (no FetchContent directory was even made).
    assert not (tmp_path / "build" / "_deps").exists()


def test_the_present_dependencies_configure(tmp_path):
    p = _configure(tmp_path)
    assert p.returncode == 0, p.stderr
    assert "fetching" not in p.stdout
