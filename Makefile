# caudal's entry points. `make demo` and `make test` each do every set-up
# step they need on a fresh machine (Debian packages, .venv, the package),
# and skip what is already done on the next run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# flujo (the reference implementation we test and benchmark against) needs
# Python >= 3.13, so the development venv uses it when the machine has it.
PY_BOOT ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 \
             /usr/local/bin/python3.13 /usr/bin/python3.13 python3; do \
             "$$p" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null && \
             { "$$p" -c 'import sys; print(sys.executable)'; break; }; done)
VENV    := .venv
VPY     := $(VENV)/bin/python
CMAKE   := $(VENV)/bin/cmake
CTEST   := $(VENV)/bin/ctest
STAMPS  := .stamps
JOBS    ?= 2

APT_PKGS := g++ libabsl-dev nlohmann-json3-dev libgtest-dev libgmock-dev \
            libxxhash-dev libzstd-dev redis-server postgresql clang-format ccache \
            chromium chromium-driver

CPP_INPUTS := $(shell find cpp cmake -type f 2>/dev/null) CMakeLists.txt
CPP_TEST_INPUTS := $(CPP_INPUTS) $(shell find tests_cpp -type f 2>/dev/null)

.PHONY: help demo demo-pipeline test test-cpp test-py test-asan test-tsan test-wheels wheels docs bench bench-quick bench-alloc docs-images format lint clean deps

help:
	@echo "make demo       run the example pipeline (sets everything up)"
	@echo "make demo-pipeline  run examples/pipeline_demo.yaml with the caudal CLI"
	@echo "make test       ctest (tests_cpp) + pytest (tests_py) + make docs"
	@echo "make test-asan  ASan+UBSan over tests_cpp and over tests_py with an instrumented module"
	@echo "make test-tsan  tests_cpp under TSan"
	@echo "make docs       the documentation site and API reference (build/docs-site)"
	@echo "make wheels     manylinux wheels for CPython $(WHEEL_PYTHONS) in dist/"
	@echo "make test-wheels  build the wheels, install each in a fresh venv and use it"
	@echo "make bench      every benchmark in benchmarks/ (results in benchmarks/results/)"
	@echo "make bench-alloc  native allocations per execute (an instrumented module)"
	@echo "make docs-images  render docs/images/*.png (the plots docs/guide.md shows)"
	@echo "make format     clang-format + ruff format"

# ---------------------------------------------------------------- set-up
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages. Run:"; echo "  sudo apt-get install -y $$missing"; exit 1; \
	  fi; \
	fi
	@touch $@

$(STAMPS)/venv: requirements-dev.txt | $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -x $(VPY) || $(PY_BOOT) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	@touch $@

# Editable install: Python sources are used in place; the extension is
# rebuilt (incrementally, in build/editable) when C++ sources change.
$(STAMPS)/install: $(STAMPS)/venv $(CPP_INPUTS) pyproject.toml
	$(VPY) -m pip install -q --no-build-isolation --no-deps \
	  -Cbuild-dir=build/editable -Ceditable.rebuild=false -e .
	@touch $@

deps: $(STAMPS)/install

# ----------------------------------------------------------------- tests
# The plain test build counts allocations (tests_cpp/executor/
# executor_memory_test.cc checks the hot path makes none with the pool on).
build/cpp/.configured: $(STAMPS)/venv CMakeLists.txt Makefile
	$(CMAKE) -S . -B build/cpp -G Ninja -DBUILD_TESTING=ON -DCAUDAL_BUILD_PYTHON=OFF \
	  -DCAUDAL_COUNT_ALLOCATIONS=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja >/dev/null
	@touch $@

test-cpp: build/cpp/.configured
	$(CMAKE) --build build/cpp -j$(JOBS)
	$(CTEST) --test-dir build/cpp --output-on-failure -j$(JOBS)

test-py: $(STAMPS)/install
	$(VPY) -m pytest tests_py

# The documentation site with the API reference generated from the
# docstrings (mkdocs.yml), built strictly: a warning fails the build.
docs: $(STAMPS)/install
	NO_MKDOCS_2_WARNING=1 $(VPY) -m mkdocs build --strict --quiet

test: test-cpp test-py docs

# ASan+UBSan: the gtest suite, then pytest against an instrumented module
# staged with the pure-Python sources in build/asan-py/stage.
test-asan: $(STAMPS)/venv
	$(CMAKE) -S . -B build/asan -G Ninja -DBUILD_TESTING=ON -DCAUDAL_BUILD_PYTHON=ON \
	  -DCAUDAL_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug -DPython_EXECUTABLE=$(abspath $(VPY)) \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja >/dev/null
	$(CMAKE) --build build/asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1 $(CTEST) --test-dir build/asan --output-on-failure -j$(JOBS)
	rm -rf build/asan/stage && mkdir -p build/asan/stage
	cp -r python/caudal build/asan/stage/caudal
	cp build/asan/cpp/bindings/_core*.so build/asan/stage/caudal/
	printf '%s\n' "# Drop the editable install's import hook so the staged module is used." \
	  "import sys" \
	  "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable_skbc_')]" \
	  > build/asan/stage/sitecustomize.py
	cd build/asan/stage && PYTHONPATH=$(abspath build/asan/stage) \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  CAUDAL_EXPECT_CORE=$(abspath build/asan/stage/caudal) \
	  $(abspath $(VPY)) -m pytest -p no:cacheprovider -c $(abspath pyproject.toml) \
	  --rootdir=$(abspath .) $(abspath tests_py) -x -q

test-tsan: $(STAMPS)/venv
	$(CMAKE) -S . -B build/tsan -G Ninja -DBUILD_TESTING=ON -DCAUDAL_BUILD_PYTHON=OFF \
	  -DCAUDAL_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja >/dev/null
	$(CMAKE) --build build/tsan -j$(JOBS)
	TSAN_OPTIONS=halt_on_error=1 $(CTEST) --test-dir build/tsan --output-on-failure -j$(JOBS)

# ------------------------------------------------------------ demo, bench
demo: $(STAMPS)/install
	@echo "== 1. a batch through ExecutorCore (retries, timeouts, fallback, stats)"
	$(VPY) examples/demo.py
	@echo; echo "== 2. a YAML pipeline through the caudal CLI"
	@$(MAKE) --no-print-directory demo-pipeline
	@echo; echo "== 3. a pipeline killed mid-run, then resumed from its checkpoints"
	$(VPY) examples/resume_demo.py

# The YAML pipeline example through the CLI (checkpoints in a temporary file).
demo-pipeline: $(STAMPS)/install
	cd examples && ../$(VENV)/bin/caudal run pipeline_demo.yaml \
	  --registry pipeline_registry:REGISTRY --resolver pipeline_registry:resolver \
	  --input '{"topic": "rivers"}' --store "$$(mktemp -d)/checkpoints.db"

# The pictures in docs/guide.md (tests_py/package/test_docs.py checks the script works).
docs-images: $(STAMPS)/install
	$(VPY) docs/render_images.py

bench: $(STAMPS)/install
	$(VPY) benchmarks/run.py

bench-quick: $(STAMPS)/install
	$(VPY) benchmarks/run.py --quick

# Section 4 of bench_memory_context.py against a module that counts native
# allocations (-DCAUDAL_COUNT_ALLOCATIONS=ON), staged like test-asan's:
# writes benchmarks/results/memory_context_alloc.json. BENCH_ARGS=--quick.
bench-alloc: $(STAMPS)/venv
	$(CMAKE) -S . -B build/alloc -G Ninja -DBUILD_TESTING=OFF -DCAUDAL_BUILD_PYTHON=ON \
	  -DCAUDAL_COUNT_ALLOCATIONS=ON -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(abspath $(VPY)) \
	  -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja >/dev/null
	$(CMAKE) --build build/alloc -j$(JOBS)
	rm -rf build/alloc/stage && mkdir -p build/alloc/stage
	cp -r python/caudal build/alloc/stage/caudal
	cp build/alloc/cpp/bindings/_core*.so build/alloc/stage/caudal/
	printf '%s\n' "import sys" \
	  "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable_skbc_')]" \
	  > build/alloc/stage/sitecustomize.py
	PYTHONPATH=$(abspath build/alloc/stage) $(abspath $(VPY)) benchmarks/bench_memory_context.py \
	  --executor-only --out memory_context_alloc $(BENCH_ARGS)

# ---------------------------------------------------------------- wheels
# The sdist, then one wheel per CPython version (pyenv's pythonX.Y, else
# the one on PATH) built from it with pip in an isolated environment (so the sdist
# is known to build), zstd linked in statically
# (CAUDAL_STATIC_DEPS), then `auditwheel repair`: Abseil's shared
# libraries are copied into the wheel (caudal.libs/) and the wheel is
# tagged manylinux. Results in dist/.
WHEEL_PYTHONS ?= 3.11 3.12 3.13
CCACHE := $(shell command -v ccache 2>/dev/null)

wheels: $(STAMPS)/venv
	@rm -rf build/wheels dist/caudal-*.whl dist/caudal-*.tar.gz
	@mkdir -p build/wheels dist
	$(VPY) -m build --sdist --outdir dist .
	@for v in $(WHEEL_PYTHONS); do \
	  py=$$(for p in $$HOME/.pyenv/versions/$$v.*/bin/python$$v $$(command -v python$$v); do \
	          "$$p" -c 'import sys' 2>/dev/null && echo "$$p" && break; done); \
	  if [ -z "$$py" ]; then echo "make wheels: no python$$v (pyenv install $$v, or WHEEL_PYTHONS=...)"; exit 1; fi; \
	  echo "== the wheel for CPython $$v ($$py)"; \
	  CMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE) CMAKE_C_COMPILER_LAUNCHER=$(CCACHE) \
	  CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) \
	  "$$py" -m pip wheel dist/caudal-*.tar.gz --no-deps -q -w build/wheels/raw \
	    -Cbuild-dir=$(abspath build)/wheel-$$v -Ccmake.define.CAUDAL_STATIC_DEPS=ON || exit 1; \
	done
	PATH=$(abspath $(VENV))/bin:$$PATH $(VPY) -m auditwheel repair -w dist build/wheels/raw/*.whl
	@for w in dist/caudal-*.whl; do PATH=$(abspath $(VENV))/bin:$$PATH $(VPY) -m auditwheel show $$w; done

# Each wheel in a fresh venv of its interpreter, used from outside the tree
# (tests_py/wheels/test_wheels.py).
test-wheels: wheels $(STAMPS)/install
	CAUDAL_WHEELS_DIR=$(abspath dist) $(VPY) -m pytest tests_py/wheels -v -p no:randomly

# ---------------------------------------------------------------- habits
format: $(STAMPS)/venv
	clang-format -i $$(find cpp tests_cpp -name '*.h' -o -name '*.cc')
	$(VENV)/bin/ruff format python tests_py benchmarks examples

lint: $(STAMPS)/venv
	clang-format --dry-run -Werror $$(find cpp tests_cpp -name '*.h' -o -name '*.cc')
	$(VENV)/bin/ruff check python tests_py benchmarks examples

clean:
	rm -rf build $(STAMPS) dist *.egg-info
