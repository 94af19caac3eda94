# The two commands of README.md. Each runs tools/setup_env.sh first: it builds .venv on a
# fresh machine (Python 3.11, torch 2.14.1, detectron2, this package) and returns in well
# under a second when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench-demo clean-demo setup-d2main test-d2main fuzz gpu-kit

setup:
	@SEG_PLUGINS_VENV=$(abspath $(VENV)) bash tools/setup_env.sh

# Train + evaluate U-Net on the embedded synthetic "shapes" dataset (CPU, ~10 min).
demo: setup
	$(PY) tools/train_net.py --config-file configs/shapes/unet_shapes.yaml

# The test suite (CPU). pytest exits 5 when it collected no test: make fails on it too.
test: setup
	$(PY) -m pytest tests --durations=15 $(PYTEST_ARGS)

# Randomized hunting with the property tests (outside CI, whose runs are derandomized):
# FUZZ_FACTOR times each test's CI example count, drawn from a seed that is printed;
# `make fuzz FUZZ_SEED=<seed>` replays a run. What it finds becomes a fixed regression test.
FUZZ_SEED ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
FUZZ_FACTOR ?= 20
fuzz: setup
	@echo "make fuzz: hypothesis seed $(FUZZ_SEED), $(FUZZ_FACTOR)x the CI example counts (replay: make fuzz FUZZ_SEED=$(FUZZ_SEED) FUZZ_FACTOR=$(FUZZ_FACTOR))"
	SEG_PLUGINS_HYPOTHESIS_PROFILE=hunt SEG_PLUGINS_FUZZ_FACTOR=$(FUZZ_FACTOR) \
	  $(PY) -m pytest tests -m property -p no:cacheprovider --hypothesis-seed=$(FUZZ_SEED) \
	  --hypothesis-show-statistics $(PYTEST_ARGS)

# Time the demo end to end and check its mIoU target (docs/model_zoo.md, docs/benchmarks_demo.md).
bench-demo: setup
	$(PY) tools/benchmark_demo.py

clean-demo:
	rm -rf output/unet_shapes

# The second CI leg: the same suite on official detectron2 main, built from source with its
# C++ ops in a venv of its own (.venv-d2main), from the snapshot in ../shared (or any
# detectron2 checkout / .tar.gz given as D2_MAIN_SOURCE=...).
D2_MAIN_VENV ?= .venv-d2main
D2_MAIN_SOURCE ?= $(lastword $(sort $(wildcard ../shared/detectron2-main-*.tar.gz)))

setup-d2main:
	@test -n "$(D2_MAIN_SOURCE)" || { echo "no detectron2 main source: set D2_MAIN_SOURCE=path (checkout or .tar.gz)"; exit 2; }
	@SEG_PLUGINS_VENV=$(abspath $(D2_MAIN_VENV)) SEG_PLUGINS_D2_SOURCE=$(abspath $(D2_MAIN_SOURCE)) bash tools/setup_env.sh

test-d2main: setup-d2main
	@$(D2_MAIN_VENV)/bin/python -c "from seg_plugins import compat; import sys; sys.exit(0 if compat.has_compiled_ops() else 'test-d2main: $(D2_MAIN_VENV) has a detectron2 without its compiled ops, not a source build; remove $(D2_MAIN_VENV) and run again')"
	$(D2_MAIN_VENV)/bin/python -m pytest tests --durations=15 $(PYTEST_ARGS)

# The GPU kit (docs/gpu.md): wheels for the GPU machine's Python 3.12 + detectron2's source in
# .gpu_kit/ (about 7 MiB), checked by pip's resolver; then, there, with .gpu_kit carried:
#   python3 tools/gpu_kit.py run --out $OUT
gpu-kit: setup
	$(PY) tools/gpu_kit.py prepare --check
