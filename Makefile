# avalign: the README's commands. Every target that runs code sets up .venv first.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.avalign-installed
PRESET ?= demo
OUTPUT_DIR ?= runs/$(PRESET)

.PHONY: setup demo study test bench clean

setup: $(STAMP)

# Torch first, pinned, so that pip never resolves an unpinned (CUDA) torch for the package.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[space,test]"
	touch $(STAMP)

demo: setup
	$(PY) -m avalign.training.pipeline --preset $(PRESET) --output-dir $(OUTPUT_DIR)

# the alignment study (issue 19): arms x seeds beside the controls; reuses runs/$(PRESET) from `make demo`
study: setup
	$(PY) -m avalign.training.study --preset $(PRESET) --jobs 2

test: setup
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) runs
