# The two commands of README.md. Each runs tools/setup_env.sh first: it builds .venv on a
# fresh machine (Python 3.11, torch 2.14.1, detectron2, this package) and returns in well
# under a second when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench-demo clean-demo

setup:
	@SEG_PLUGINS_VENV=$(abspath $(VENV)) bash tools/setup_env.sh

# Train + evaluate U-Net on the embedded synthetic "shapes" dataset (CPU, ~10 min).
demo: setup
	$(PY) tools/train_net.py --config-file configs/shapes/unet_shapes.yaml

# The test suite (CPU). pytest exits 5 when it collected no test: make fails on it too.
test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Time the demo end to end and check its mIoU target (README "Benchmarks").
bench-demo: setup
	$(PY) tools/benchmark_demo.py

clean-demo:
	rm -rf output/unet_shapes
