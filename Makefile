# MTCNN training pipeline. `make help` lists the targets; every variable below can be overridden:
#   make pnet-data WIDER=/data/WIDER LANDMARKS=/data/trainImageList.txt OUT=/data/mtcnn WORKERS=4
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

# -- environment ----------------------------------------------------------------------------
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed

# -- inputs and outputs -----------------------------------------------------------------------
DATA ?= ../shared/data
WIDER ?= $(DATA)/wider
WIDER_TXT ?= $(WIDER)/wider_face_split/wider_face_train_bbx_gt.txt
WIDER_IMAGES ?= $(WIDER)/WIDER_train/images
LANDMARKS ?= $(DATA)/landmarks/trainImageList.txt
OUT ?= build
WORKERS ?= 0
SEED ?= 0
DEVICE ?= cpu
GEN_FLAGS ?=

DEMO := build/demo
DEMO_WIDER := $(DEMO)/wider
DEMO_TXT := $(DEMO_WIDER)/wider_face_split/wider_face_train_bbx_gt.txt

SAMPLING_SRC := prepare/generate.py prepare/sampling.py prepare/landmark_aug.py prepare/crops.py \
	prepare/boxes.py lmdb_builders/schema.py lmdb_builders/writer.py annotations/wider.py annotations/landmarks.py

.PHONY: help setup pnet-data stats demo test test-fast bench clean-demo

help: ## list the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

setup: $(VENV_STAMP) ## create .venv and install the pinned dependencies

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install -q --upgrade pip && $(VENV)/bin/pip install -q -e '.[test]' && touch $@

# -- data stages ------------------------------------------------------------------------------
pnet-data: $(OUT)/pnet/manifest.json ## WIDER + landmark list -> 12 px LMDB shards in $(OUT)/pnet

$(OUT)/pnet/manifest.json: $(WIDER_TXT) $(LANDMARKS) $(SAMPLING_SRC) | $(VENV_STAMP)
	$(PY) -m prepare.generate --wider-txt $(WIDER_TXT) --wider-images $(WIDER_IMAGES) --landmarks $(LANDMARKS) \
		--out $(OUT)/pnet --net-size 12 --seed $(SEED) --workers $(WORKERS) $(GEN_FLAGS)

stats: | $(VENV_STAMP) ## annotation statistics table and face-size histogram ($(OUT)/stats/face_sizes.png)
	$(PY) -m annotations.stats --wider $(WIDER_TXT) --images $(WIDER_IMAGES) --landmarks $(LANDMARKS) \
		--out-png $(OUT)/stats/face_sizes.png

# -- demo: the whole job on a tiny data set built from images shipped with scikit-image ------
$(DEMO_TXT): prepare/demo_data.py | $(VENV_STAMP)
	$(PY) -m prepare.demo_data --out $(DEMO_WIDER) --seed $(SEED)

demo: $(DEMO_TXT) ## run every stage on a tiny built-in data set (build/demo)
	$(MAKE) --no-print-directory stats pnet-data WIDER=$(DEMO_WIDER) LANDMARKS=$(DEMO_WIDER)/landmarks/trainImageList.txt \
		OUT=$(DEMO) GEN_FLAGS=--tiny
	@echo "demo done: shards and manifest in $(DEMO)/pnet, statistics plot in $(DEMO)/stats/face_sizes.png"

clean-demo: ## delete build/demo
	rm -rf $(DEMO)

# -- checks -----------------------------------------------------------------------------------
test: $(VENV_STAMP) ## run the test suite (tests that need ../shared/data skip when it is absent)
	$(PY) -m pytest -q

test-fast: $(VENV_STAMP) ## the tests without those marked slow
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV_STAMP) ## benchmarks on ../shared/data: data stage time/RSS, LMDB read throughput
	$(PY) -m benchmarks.bench_data --wider $(WIDER) --landmarks $(LANDMARKS) --workers $(WORKERS)
