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
# Every stage runs through core.launch: Ctrl-C, during its imports too, ends it with one line.
RUN := $(PY) -m core.launch
VENV_STAMP := $(VENV)/.installed

# -- inputs and outputs -----------------------------------------------------------------------
# make cannot name a file whose path holds a space (it splits prerequisites at spaces), so a path
# variable with one stops here in one line rather than in a "Circular ... dependency" puzzle.
PATH_VARS := DATA WIDER WIDER_TXT WIDER_IMAGES LANDMARKS OUT VENV VAL_TXT VAL_IMAGES WEIGHTS_DIR GT PRED IMG DETECT_OUT \
	EXPORT_OUT ALIGN_OUT LM_OUT LANDMARK_LIST STAGE_OUT DEMO LFW LFW_IMAGES PEOPLE PAIRS IDENTITIES ONLY_PEOPLE RECOG_OUT \
	RECOG_ALIGNED RECOG_BUILD EMBED_OUT EMBEDDER LFW_OUT CV_OUT
check_spaces = $(foreach v,$(PATH_VARS),$(if $(word 2,$($(v))),$(error $(v)="$($(v))" has a space, and make cannot \
	name such files: use a path without spaces (a symbolic link to it works))))
DATA ?= ../shared/data
WIDER ?= $(DATA)/wider
WIDER_TXT ?= $(WIDER)/wider_face_split/wider_face_train_bbx_gt.txt
WIDER_IMAGES ?= $(WIDER)/WIDER_train/images
LANDMARKS ?= $(DATA)/landmarks/trainImageList.txt
# WIDER_FRACTION=0.25: the P/R/O-Net builds read only that share of WIDER_TXT's images (a fixed draw,
# smaller shares inside larger ones: annotations.subset), for data-scaling runs; the val build reads all
TRAIN_TXT = $(if $(WIDER_FRACTION),$(OUT)/wider_train_subset.txt,$(WIDER_TXT))
OUT ?= build
WORKERS ?= 0
SEED ?= 0
DEVICE ?= cpu
GEN_FLAGS ?=
# Per-build sample settings of the shipped weights; GEN_FLAGS, given after them, wins. O-Net is fed
# R-Net's squared boxes, which sit larger and higher around a face than a landmark list's box, so its
# landmark crops span that range rather than only near-copies of the list's box (docs/experiments.md).
GEN_FLAGS_pnet ?=
GEN_FLAGS_rnet ?=
GEN_FLAGS_onet ?= --landmark-min-scale 0.9 --landmark-max-scale 1.4 --landmark-max-shift 0.15 --landmark-min-iou 0.45
GEN_FLAGS_val ?=
TRAIN_FLAGS ?=
# Per-net settings of the shipped weights (weights/MODEL_CARD.md); TRAIN_FLAGS, given after them, wins.
# R-Net and O-Net learn from small mined builds and overfit with P-Net's 16 epochs; P-Net does
# not overfit, and without mirroring it reproduces the shipped weights.
TRAIN_FLAGS_pnet ?= --no-flip
# R-Net's and O-Net's loss weights: the paper's balance in the trainer's units (why: trainers/losses.py);
# at the defaults' 1 / 0.5 / 0.5 R-Net scores too many faces below the detector's threshold.
# R-Net sees three positives for every three negatives (the paper: one): with one it scores too
# many unseen faces below the detector's 0.7 (docs/experiments.md, "R-Net's calibration").
TRAIN_FLAGS_rnet ?= --epochs 8 --loss-weights 1 1 2.5 --kind-ratio 3 3 1 2
TRAIN_FLAGS_onet ?= --epochs 10 --loss-weights 1 1 5
# R-Net threshold while mining O-Net's samples: 0.3 rather than the detector's 0.7 gives 2.6x the
# negatives (42,592 instead of 16,638 on the shared set) without changing what O-Net is shown at test.
ONET_MINE_THRESHOLDS ?= 0.6 0.3 0.7
# RESUME=1: an interrupted train-* continues from its latest epoch checkpoint instead of starting over
RESUME ?=
# RESTART=1: a train-* deletes the checkpoints of an earlier run in $(OUT)/train/<net> and starts over
# (with neither, a folder holding checkpoints is refused, never overwritten)
RESTART ?=
VAL_TXT ?= $(WIDER)/wider_face_split/wider_face_val_bbx_gt.txt
VAL_IMAGES ?= $(WIDER)/WIDER_val/images
WEIGHTS_DIR ?= $(OUT)/weights
# eval-wider / detect: which weights (shipped | original:PATH | a folder with pnet.pt rnet.pt onet.pt)
WEIGHTS ?= shipped
IMAGES ?= $(VAL_IMAGES)
GT ?= $(WIDER)/eval_tools/ground_truth
PRED ?= $(OUT)/eval
# Smallest face looked for, in pixels; empty: DetectorConfig's default (20)
MIN_FACE ?=
IMG ?=
DETECT_OUT ?= $(OUT)/detect
# detect / eval-wider / align: torch, or onnx (onnxruntime; WEIGHTS= is then a folder of make export)
BACKEND ?= torch
EXPORT_OUT ?= $(OUT)/export
ALIGN_OUT ?= $(OUT)/align
# align: margin (facenet's box + 32 px, 160 px crops) or similarity (5-point warp onto ArcFace's 112 px)
ALIGN ?= margin
LARGEST ?=

# The code that makes the samples: exactly prepare.fingerprint.SAMPLING_CODE, which the build's
# fingerprint digests (a test keeps the two equal), so that an edit rebuilds instead of rerunning a no-op.
SAMPLING_SRC := prepare/generate.py prepare/sampling.py prepare/landmark_aug.py prepare/crops.py prepare/pool.py \
	prepare/fingerprint.py prepare/checks.py annotations/wider.py annotations/landmarks.py annotations/visibility.py \
	lmdb_builders/schema.py lmdb_builders/writer.py lmdb_builders/manifest.py core/geometry.py core/imageio.py

TRAIN_SRC := trainers/train.py trainers/config.py trainers/engine.py trainers/model.py trainers/checkpoint.py \
	trainers/distributed.py trainers/reporting.py trainers/augment.py trainers/losses.py trainers/preflight.py \
	core/nets.py core/weights.py core/device.py core/atomic.py core/lock.py lmdb_builders/reader.py lmdb_builders/schema.py \
	lmdb_builders/verify.py lmdb_builders/manifest.py
DETECTOR_SRC := detector/__init__.py detector/cascade.py core/nets.py core/geometry.py core/imageio.py core/weights.py \
	core/device.py

.PHONY: recog-data train-embed eval-lfw cv-lfw compare export-embedder help setup pnet-data rnet-data onet-data val-data train-pnet train-rnet train-onet roc eval-wider eval-landmarks stage-recall detect \
	export align FORCE \
	stats demo test test-fast bench clean-demo original-weights

##@ Set-up
help: ## list the targets, by stage
	@awk '/^##@ / { printf "\n%s\n", substr($$0, 5) } /^[a-z][a-zA-Z_-]*:.*## / { split($$0, a, ":.*## "); \
		printf "  %-18s%s\n", a[1], a[2] }' $(MAKEFILE_LIST)

setup: $(VENV_STAMP) ## create .venv and install the pinned dependencies

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install -q --upgrade pip && $(VENV)/bin/pip install -q -e '.[test]' && touch $@

##@ Detector: sample builds (data stages)
# -- data stages ------------------------------------------------------------------------------
pnet-data: $(OUT)/pnet/manifest.json ## WIDER + landmark list -> 12 px LMDB shards in $(OUT)/pnet

$(OUT)/pnet/manifest.json: $(OUT)/settings/pnet.txt $(TRAIN_TXT) $(LANDMARKS) $(SAMPLING_SRC) | $(VENV_STAMP)
	$(RUN) prepare.generate --wider-txt $(TRAIN_TXT) --wider-images $(WIDER_IMAGES) --landmarks $(LANDMARKS) \
		--out $(OUT)/pnet --net-size 12 --seed $(SEED) --workers $(WORKERS) $(GEN_FLAGS_pnet) $(GEN_FLAGS)

rnet-data: $(OUT)/rnet/manifest.json ## mine 24 px samples with the trained P-Net -> $(OUT)/rnet

$(OUT)/rnet/manifest.json: $(OUT)/settings/rnet.txt $(WEIGHTS_DIR)/pnet.pt $(TRAIN_TXT) $(LANDMARKS) $(SAMPLING_SRC) \
		prepare/mining.py $(DETECTOR_SRC) | $(VENV_STAMP)
	$(RUN) prepare.generate --wider-txt $(TRAIN_TXT) --wider-images $(WIDER_IMAGES) --landmarks $(LANDMARKS) \
		--out $(OUT)/rnet --net-size 24 --mine-with $(WEIGHTS_DIR) --device $(DEVICE) --seed $(SEED) --workers $(WORKERS) \
		$(GEN_FLAGS_rnet) $(GEN_FLAGS)

onet-data: $(OUT)/onet/manifest.json ## mine 48 px samples with P-Net then R-Net -> $(OUT)/onet

$(OUT)/onet/manifest.json: $(OUT)/settings/onet.txt $(WEIGHTS_DIR)/pnet.pt $(WEIGHTS_DIR)/rnet.pt $(TRAIN_TXT) $(LANDMARKS) $(SAMPLING_SRC) \
		prepare/mining.py $(DETECTOR_SRC) | $(VENV_STAMP)
	$(RUN) prepare.generate --wider-txt $(TRAIN_TXT) --wider-images $(WIDER_IMAGES) --landmarks $(LANDMARKS) \
		--out $(OUT)/onet --net-size 48 --mine-with $(WEIGHTS_DIR) --mine-thresholds $(ONET_MINE_THRESHOLDS) \
		--device $(DEVICE) --seed $(SEED) --workers $(WORKERS) $(GEN_FLAGS_onet) $(GEN_FLAGS)

val-data: $(OUT)/val/manifest.json ## held-out 12/24/48 px samples from WIDER val + held-out landmark faces

$(OUT)/val/manifest.json: $(OUT)/settings/val.txt $(VAL_TXT) $(LANDMARKS) $(SAMPLING_SRC) | $(VENV_STAMP)
	$(RUN) prepare.generate --wider-txt $(VAL_TXT) --wider-images $(VAL_IMAGES) --landmarks $(LANDMARKS) \
		--out $(OUT)/val --net-size 12 24 48 --landmark-part holdout --seed $(SEED) --workers $(WORKERS) $(GEN_FLAGS_val) $(GEN_FLAGS)

##@ Detector: training
# -- training: each net's final weights land in $(WEIGHTS_DIR), the folder mining and evaluation read
train-pnet: $(WEIGHTS_DIR)/pnet.pt ## train P-Net on $(OUT)/pnet
train-rnet: $(WEIGHTS_DIR)/rnet.pt ## train R-Net on $(OUT)/rnet
train-onet: $(WEIGHTS_DIR)/onet.pt ## train O-Net on $(OUT)/onet

$(WEIGHTS_DIR)/%.pt: $(OUT)/%/manifest.json $(OUT)/train/%/flags.txt $(TRAIN_SRC) | $(VENV_STAMP)
	$(RUN) trainers.train --net $* --data $(OUT)/$* --out $(OUT)/train/$* --export $@ --device $(DEVICE) --seed $(SEED) \
		$(if $(RESUME),--resume) $(if $(RESTART),--restart) $(TRAIN_FLAGS_$*) $(TRAIN_FLAGS)

# $(call settings_file,FILE,SETTINGS): the rule writing FILE, which holds a rule's settings and is a
# prerequisite of its result. It depends on FORCE only when it holds other settings than these, so new
# settings redo the result while an unchanged rerun (and make -q) finds it up to date, as with any input file.
same_text = $(and $(findstring x$(1)x,x$(2)x),$(findstring x$(2)x,x$(1)x))
settings_file = $(eval $(1): SETTINGS = $(2))$(eval $(1): $(if $(call same_text,$(2),$(if $(wildcard $(1)),$(file <$(1)))),,FORCE) \
	; @mkdir -p $$(@D) && printf '%s\n' '$$(SETTINGS)' > $$@)

# Each net's training settings live in $(OUT)/train/<net>/flags.txt, a prerequisite of its weights.
train_settings = device=$(DEVICE) seed=$(SEED) flags=$(strip $(TRAIN_FLAGS_$(1)) $(TRAIN_FLAGS))
$(foreach net,pnet rnet onet,$(call settings_file,$(OUT)/train/$(net)/flags.txt,$(call train_settings,$(net))))

# Each build's sample settings live in $(OUT)/settings/<build>.txt, a prerequisite of its manifest
# (settings_file above). The worker count is not among them: it changes no byte of a build.
data_settings = seed=$(SEED)$(if $(filter rnet onet,$(1)), device=$(DEVICE))$(if $(and $(WIDER_FRACTION),$(filter-out val,$(1))), \
	wider_fraction=$(WIDER_FRACTION)) flags=$(strip $(GEN_FLAGS_$(1)) $(GEN_FLAGS))
$(foreach build,pnet rnet onet val,$(call settings_file,$(OUT)/settings/$(build).txt,$(call data_settings,$(build))))

$(call settings_file,$(OUT)/settings/subset.txt,fraction=$(WIDER_FRACTION))
$(OUT)/wider_train_subset.txt: $(OUT)/settings/subset.txt $(WIDER_TXT) annotations/subset.py | $(VENV_STAMP)
	$(RUN) annotations.subset --wider-txt $(WIDER_TXT) --fraction $(WIDER_FRACTION) --out $@

##@ Detector: the original weights, evaluation and use
# -- the original MTCNN weights (facenet-pytorch's wheel, fetched, never installed) -------------
ORIGINAL := weights/original
FACENET_PKG := build/facenet-pytorch
original-weights: $(ORIGINAL)/onet.pt ## fetch the original P/R/O-Net weights into weights/original (network)

$(ORIGINAL)/onet.pt: trainers/original_weights.py | $(VENV_STAMP)
	$(RUN) trainers.original_weights --out $(ORIGINAL) --package-dir $(FACENET_PKG)

# -- evaluation -------------------------------------------------------------------------------
roc: $(OUT)/roc/summary.json ## per-stage ROC on held-out samples -> $(OUT)/roc/roc.png

# What the ROC figures depend on: the code that reads the samples and runs the nets, and the
# detector's thresholds (detector/cascade.py) at which recall and false positives are reported.
ROC_SRC := evaluation/roc.py detector/cascade.py core/nets.py core/weights.py lmdb_builders/reader.py \
	lmdb_builders/schema.py lmdb_builders/manifest.py lmdb_builders/writer.py lmdb_builders/verify.py core/device.py

$(OUT)/roc/summary.json: $(OUT)/val/manifest.json $(WEIGHTS_DIR)/pnet.pt $(WEIGHTS_DIR)/rnet.pt $(WEIGHTS_DIR)/onet.pt \
		$(ROC_SRC) | $(VENV_STAMP)
	$(RUN) evaluation.roc --val-data $(OUT)/val --weights $(WEIGHTS_DIR) --out $(OUT)/roc --device $(DEVICE)

# The weights files a WEIGHTS spec (shipped | original:PATH | folder) names: results depend on them.
weights_files = $(wildcard $(addprefix $(if $(filter shipped,$(1)),weights,$(patsubst original:%,%,$(1)))/,pnet.pt rnet.pt onet.pt mtcnn.json))

# eval-wider: redone when the weights files, the ground truth, the code or the settings change; the
# evaluator records the weights files' sha256 and detects every image again when they differ
eval-wider: $(PRED)/results.json ## WIDER AP easy/medium/hard: IMAGES= GT= PRED= WEIGHTS= MIN_FACE=

$(call settings_file,$(PRED)/.make-settings,weights=$(WEIGHTS) backend=$(BACKEND) images=$(IMAGES) min_face=$(MIN_FACE))
$(PRED)/results.json: $(PRED)/.make-settings $(call weights_files,$(WEIGHTS)) $(wildcard $(GT)/*.mat) \
		evaluation/wider_eval.py annotations/wider_mat.py $(DETECTOR_SRC) | $(VENV_STAMP)
	$(RUN) evaluation.wider_eval --images $(IMAGES) --gt $(GT) --pred $(PRED) --weights $(WEIGHTS) $(if $(MIN_FACE),--min-face $(MIN_FACE)) --device $(DEVICE) \
		--backend $(BACKEND)

WEIGHTS_TAG = $(subst /,_,$(subst :,_,$(WEIGHTS)))
# eval-landmarks: the landmark list and which of its faces (holdout: those no training build saw)
LANDMARK_LIST ?= $(LANDMARKS)
LM_PART ?= holdout
LM_OUT ?= $(OUT)/eval-landmarks/$(WEIGHTS_TAG)
eval-landmarks: $(LM_OUT)/results.json ## landmark NME, failure rate and CED of WEIGHTS= on LANDMARK_LIST= -> LM_OUT=

$(call settings_file,$(LM_OUT)/.make-settings,weights=$(WEIGHTS) list=$(LANDMARK_LIST) part=$(LM_PART) min_face=$(MIN_FACE))
$(LM_OUT)/results.json: $(LM_OUT)/.make-settings $(LANDMARK_LIST) $(call weights_files,$(WEIGHTS)) evaluation/landmarks.py \
		annotations/landmarks.py $(DETECTOR_SRC) | $(VENV_STAMP)
	$(RUN) evaluation.landmarks --landmarks $(LANDMARK_LIST) --weights $(WEIGHTS) --out $(LM_OUT) --part $(LM_PART) \
		$(if $(MIN_FACE),--min-face $(MIN_FACE)) --device $(DEVICE)

# stage-recall: which net loses the faces; redone when the weights, ground truth, code or settings change
STAGE_OUT ?= $(OUT)/stage-recall/$(WEIGHTS_TAG)
stage-recall: $(STAGE_OUT)/results.json ## recall of each stage's boxes on WIDER val faces (easy/medium/hard, by size) of WEIGHTS= -> STAGE_OUT=

$(call settings_file,$(STAGE_OUT)/.make-settings,weights=$(WEIGHTS) images=$(IMAGES) min_face=$(MIN_FACE))
$(STAGE_OUT)/results.json: $(STAGE_OUT)/.make-settings $(call weights_files,$(WEIGHTS)) $(wildcard $(GT)/*.mat) \
		evaluation/stage_recall.py evaluation/wider_eval.py annotations/wider_mat.py $(DETECTOR_SRC) | $(VENV_STAMP)
	$(RUN) evaluation.stage_recall --images $(IMAGES) --gt $(GT) --weights $(WEIGHTS) --out $(STAGE_OUT) \
		$(if $(MIN_FACE),--min-face $(MIN_FACE)) --device $(DEVICE)

detect: | $(VENV_STAMP) ## detect faces in IMG= with WEIGHTS= (default shipped) -> DETECT_OUT=
	@test -n "$(IMG)" || { echo "usage: make detect IMG=photo.jpg [WEIGHTS=shipped|original:PATH|folder] [BACKEND=torch|onnx] [DETECT_OUT=folder]" >&2; exit 2; }
	$(RUN) detector.detect --image $(IMG) --weights $(WEIGHTS) --out $(DETECT_OUT) $(if $(MIN_FACE),--min-face $(MIN_FACE)) \
		--device $(DEVICE) --backend $(BACKEND)

export: $(EXPORT_OUT)/mtcnn.json ## WEIGHTS= as ONNX files + mtcnn.json (how to run the cascade) -> EXPORT_OUT=

$(call settings_file,$(EXPORT_OUT)/.make-settings,weights=$(WEIGHTS))
$(EXPORT_OUT)/mtcnn.json: $(EXPORT_OUT)/.make-settings $(call weights_files,$(WEIGHTS)) detector/export.py \
		detector/onnx_backend.py $(DETECTOR_SRC) | $(VENV_STAMP)
	$(RUN) detector.export --weights $(WEIGHTS) --out $(EXPORT_OUT)

align: | $(VENV_STAMP) ## crop the faces of every image under IMAGES= -> ALIGN_OUT= (LARGEST=1, ALIGN=similarity)
	$(RUN) detector.align --images $(IMAGES) --out $(ALIGN_OUT) --weights $(WEIGHTS) --backend $(BACKEND) \
		$(if $(MIN_FACE),--min-face $(MIN_FACE)) --align $(ALIGN) $(if $(filter-out 0,$(LARGEST)),--largest) --device $(DEVICE)

FORCE:

stats: | $(VENV_STAMP) ## annotation statistics table and face-size histogram ($(OUT)/stats/face_sizes.png)
	$(RUN) annotations.stats --wider $(WIDER_TXT) --images $(WIDER_IMAGES) --landmarks $(LANDMARKS) \
		--out-png $(OUT)/stats/face_sizes.png

##@ Recognition: aligned identity faces -> embedder -> LFW verification
# -- recognition ------------------------------------------------------------------------------
# LFW's protocol files, and its images as <name>/<name>_NNNN.jpg (lfw.tgz, or the snapshot in its README)
LFW ?= $(DATA)/lfw
LFW_IMAGES ?= $(LFW)/images
PEOPLE ?= $(LFW)/people.txt
PAIRS ?= $(LFW)/pairs.txt
# The identity folder <root>/<identity>/<image> to train on (CASIA-WebFace, VGGFace2, ...; LFW by default)
IDENTITIES ?= $(LFW_IMAGES)
# FOLD=k: leave out the people of LFW fold k (1-10) when building, score only fold k's pairs when evaluating
FOLD ?=
# ONLY_PEOPLE=file: build only the people of that LFW people list (View 1's peopleDevTrain.txt)
ONLY_PEOPLE ?=
RECOG_OUT ?= $(OUT)/recog
# Alignment of the identity build and of LFW's pairs (the same for both): similarity | margin, crop side
RECOG_ALIGN ?= similarity
RECOG_SIZE ?= 64
RECOG_ALIGNED ?= $(RECOG_OUT)/aligned
RECOG_TAG = $(if $(FOLD),fold-$(FOLD),all)$(if $(ONLY_PEOPLE),-$(basename $(notdir $(ONLY_PEOPLE))))
RECOG_BUILD ?= $(RECOG_OUT)/$(RECOG_TAG)
EMBED_FLAGS ?=
EMBED_OUT ?= $(OUT)/train/embed-$(RECOG_TAG)
# eval-lfw / compare / export-embedder: shipped (weights/embedder.pt), a weights file, or a folder with embedder.pt
EMBEDDER ?= shipped
# eval-lfw's own options, e.g. --allow-missing (count pairs naming absent images as errors), --no-flip
LFW_FLAGS ?=
LFW_OUT ?= $(OUT)/eval-lfw/$(subst /,_,$(EMBEDDER))$(if $(FOLD),-fold-$(FOLD))
# The weights file an EMBEDDER spec names (a prerequisite: a retrained embedder is scored again)
embedder_files = $(if $(filter shipped,$(1)),weights/embedder.pt,$(wildcard $(1)/embedder.pt $(filter %.pt,$(1))))
RECOG_FLAGS = --weights $(WEIGHTS) --align $(RECOG_ALIGN) --image-size $(RECOG_SIZE) $(if $(MIN_FACE),--min-face $(MIN_FACE)) \
	--device $(DEVICE)
RECOG_SRC := prepare/identities.py annotations/identities.py annotations/lfw.py annotations/errors.py lmdb_builders/faces.py \
	lmdb_builders/writer.py lmdb_builders/manifest.py lmdb_builders/schema.py detector/align.py $(DETECTOR_SRC)
EMBED_SRC := trainers/embed.py trainers/embed_config.py trainers/embed_task.py trainers/metric_losses.py \
	lmdb_builders/identity.py core/embednet.py $(TRAIN_SRC)
LFW_SRC := evaluation/lfw.py annotations/lfw.py core/verification.py core/embedder.py core/embednet.py detector/align.py \
	$(DETECTOR_SRC)

recog-data: $(RECOG_BUILD)/manifest.json ## detect + align one face per image of IDENTITIES= -> LMDB shards (FOLD=k leaves out fold k)

$(call settings_file,$(RECOG_BUILD)/.make-settings,identities=$(IDENTITIES) fold=$(FOLD) only=$(ONLY_PEOPLE) $(RECOG_FLAGS))
$(RECOG_BUILD)/manifest.json: $(RECOG_BUILD)/.make-settings $(if $(FOLD),$(PEOPLE)) $(ONLY_PEOPLE) $(RECOG_SRC) | $(VENV_STAMP)
	$(RUN) prepare.identities --images $(IDENTITIES) --out $(RECOG_BUILD) --aligned $(RECOG_ALIGNED) \
		$(if $(FOLD),--people $(PEOPLE) --fold $(FOLD)) $(if $(ONLY_PEOPLE),--only-people $(ONLY_PEOPLE)) $(RECOG_FLAGS)

train-embed: $(EMBED_OUT)/embedder.pt ## train the embedder on the recog-data build (EMBED_FLAGS=, FOLD=, RESUME=1, RESTART=1)

$(call settings_file,$(EMBED_OUT)/flags.txt,device=$(DEVICE) seed=$(SEED) flags=$(EMBED_FLAGS))
$(EMBED_OUT)/embedder.pt: $(RECOG_BUILD)/manifest.json $(EMBED_OUT)/flags.txt $(EMBED_SRC) | $(VENV_STAMP)
	$(RUN) trainers.embed --data $(RECOG_BUILD) --out $(EMBED_OUT) --device $(DEVICE) --seed $(SEED) \
		$(if $(RESUME),--resume) $(if $(RESTART),--restart) $(EMBED_FLAGS)

eval-lfw: $(LFW_OUT)/results.json ## LFW 10-fold verification of EMBEDDER= on PAIRS= (FOLD=k: fold k only) -> LFW_OUT=

$(call settings_file,$(LFW_OUT)/.make-settings,embedder=$(EMBEDDER) pairs=$(PAIRS) images=$(LFW_IMAGES) fold=$(FOLD) \
	$(RECOG_FLAGS) $(LFW_FLAGS))
$(LFW_OUT)/results.json: $(LFW_OUT)/.make-settings $(PAIRS) $(call embedder_files,$(EMBEDDER)) $(LFW_SRC) | $(VENV_STAMP)
	$(RUN) evaluation.lfw --images $(LFW_IMAGES) --pairs $(PAIRS) --out $(LFW_OUT) --embedder $(EMBEDDER) \
		--aligned $(RECOG_ALIGNED) $(if $(FOLD),--fold $(FOLD)) $(RECOG_FLAGS) $(LFW_FLAGS)

# cv-lfw: ten builds, ten trainings, ten scorings (each a real file, so it resumes fold by fold)
CV_OUT ?= $(OUT)/cv-lfw
CV_FOLDS ?= 1 2 3 4 5 6 7 8 9 10
cv-lfw: $(CV_OUT)/results.json ## train on nine folds' people and score the tenth, for each of LFW's ten folds

$(RECOG_OUT)/fold-%/manifest.json: $(PEOPLE) $(RECOG_SRC) | $(VENV_STAMP)
	$(RUN) prepare.identities --images $(IDENTITIES) --out $(@D) --aligned $(RECOG_ALIGNED) --people $(PEOPLE) --fold $* \
		$(RECOG_FLAGS)

$(OUT)/train/embed-fold-%/embedder.pt: $(RECOG_OUT)/fold-%/manifest.json $(EMBED_SRC) | $(VENV_STAMP)
	$(RUN) trainers.embed --data $(RECOG_OUT)/fold-$* --out $(@D) --device $(DEVICE) --seed $(SEED) \
		$(if $(RESUME),--resume) $(if $(RESTART),--restart) $(EMBED_FLAGS)

$(CV_OUT)/fold-%/results.json: $(OUT)/train/embed-fold-%/embedder.pt $(PAIRS) $(LFW_SRC) | $(VENV_STAMP)
	$(RUN) evaluation.lfw --images $(LFW_IMAGES) --pairs $(PAIRS) --out $(@D) --embedder $< --aligned $(RECOG_ALIGNED) \
		--fold $* $(RECOG_FLAGS)

$(CV_OUT)/results.json: $(foreach k,$(CV_FOLDS),$(CV_OUT)/fold-$(k)/results.json) evaluation/lfw_cv.py | $(VENV_STAMP)
	$(RUN) evaluation.lfw_cv --out $@ --folds $(filter %/results.json,$^)

compare: | $(VENV_STAMP) ## squared distances between the faces of IMAGES="a.jpg b.jpg ..." (EMBEDDER=, WEIGHTS=)
	$(RUN) detector.compare --images $(IMAGES) --embedder $(EMBEDDER) --weights $(WEIGHTS) --align $(RECOG_ALIGN) \
		--image-size $(RECOG_SIZE)

export-embedder: $(EXPORT_OUT)/embedder.json ## EMBEDDER= as ONNX (embedder.onnx, checked against torch) + embedder.json

$(call settings_file,$(EXPORT_OUT)/.make-settings-embedder,embedder=$(EMBEDDER))
$(EXPORT_OUT)/embedder.json: $(EXPORT_OUT)/.make-settings-embedder detector/export_embedder.py core/embedder.py core/embednet.py \
		$(call embedder_files,$(EMBEDDER)) | $(VENV_STAMP)
	$(RUN) detector.export_embedder --embedder $(EMBEDDER) --out $(EXPORT_OUT)

##@ Demo
# -- demo: the whole job on a tiny data set built from images shipped with scikit-image ------
DEMO ?= build/demo
DEMO_WIDER = $(DEMO)/wider
DEMO_TXT = $(DEMO_WIDER)/wider_face_split/wider_face_train_bbx_gt.txt
DEMO_DATA_FLAGS ?=
# Short training: the demo shows every stage working, it does not make a usable detector.
DEMO_TRAIN_FLAGS ?= --epochs 3 --batches-per-epoch 40 --batch-size 128 --no-progress
# The detections printed at the end are the shipped weights' (what `make detect` uses)
DEMO_DETECT_WEIGHTS ?= shipped
# The demo's nets are trained for seconds: a changed trainer or setting retrains them from scratch.
DEMO_GEN_FLAGS ?= --tiny
DEMO_VARS = WIDER=$(DEMO_WIDER) LANDMARKS=$(DEMO_WIDER)/landmarks/trainImageList.txt OUT=$(DEMO) \
	GEN_FLAGS="$(DEMO_GEN_FLAGS)" TRAIN_FLAGS="$(DEMO_TRAIN_FLAGS)" RESTART=1

$(DEMO_TXT): demo/data.py annotations/wider.py annotations/landmarks.py annotations/wider_mat.py | $(VENV_STAMP)
	$(RUN) demo.data --out $(DEMO_WIDER) --seed $(SEED) $(DEMO_DATA_FLAGS)

# The recognition half of the demo: 12 people, each one of skimage's LFW faces photographed 5 times
# (demo/identities.py), in 2 folds; built without fold 2's people, trained for seconds, scored on fold 2.
DEMO_PEOPLE = $(DEMO)/people
DEMO_EMBED_FLAGS ?= --epochs 3 --people 4 --per-person 2 --batches-per-epoch 10 --widths 8 8 16 16 --dim 16 --workers 0 \
	--val-fraction 0.34 --no-progress
DEMO_RECOG_VARS = LFW=$(DEMO_PEOPLE) LFW_IMAGES=$(DEMO_PEOPLE)/images OUT=$(DEMO) FOLD=2 EMBED_FLAGS="$(DEMO_EMBED_FLAGS)" \
	RESTART=1
DEMO_SHOTS = $(DEMO_PEOPLE)/images/Demo_Person_01/Demo_Person_01_0001.jpg $(DEMO_PEOPLE)/images/Demo_Person_01/Demo_Person_01_0002.jpg \
	$(DEMO_PEOPLE)/images/Demo_Person_03/Demo_Person_03_0001.jpg

$(DEMO_PEOPLE)/pairs.txt: demo/identities.py demo/data.py annotations/lfw.py | $(VENV_STAMP)
	$(RUN) demo.identities --out $(DEMO_PEOPLE) --seed $(SEED)

demo: $(DEMO_TXT) $(DEMO_PEOPLE)/pairs.txt ## every stage of both halves on tiny built-in data sets (build/demo), then the shipped weights
	$(MAKE) --no-print-directory $(DEMO_VARS) stats pnet-data train-pnet rnet-data train-rnet onet-data train-onet \
		val-data roc
	$(MAKE) --no-print-directory $(DEMO_VARS) eval-wider WEIGHTS=$(DEMO)/weights
	@echo "the same images through the shipped weights (trained on real faces; the demo's nets saw only the toy set):"
	$(MAKE) --no-print-directory $(DEMO_VARS) eval-wider WEIGHTS=$(DEMO_DETECT_WEIGHTS) PRED=$(DEMO)/eval-shipped
	$(MAKE) --no-print-directory $(DEMO_VARS) detect WEIGHTS=$(DEMO_DETECT_WEIGHTS) IMG=$(DEMO_WIDER)/sample/astronaut.png \
		DETECT_OUT=$(DEMO)/detect
	@echo "recognition: align the toy people, train an embedder without fold 2's people, score fold 2's pairs:"
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) recog-data train-embed
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) eval-lfw EMBEDDER=$(DEMO)/train/embed-fold-2 LFW_OUT=$(DEMO)/eval-lfw
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) export-embedder EMBEDDER=$(DEMO)/train/embed-fold-2 EXPORT_OUT=$(DEMO)/export
	@echo "the same pairs through the shipped embedder (trained on LFW's people of folds 1-9, none of them these):"
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) eval-lfw EMBEDDER=shipped LFW_OUT=$(DEMO)/eval-lfw-shipped
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) compare EMBEDDER=shipped IMAGES="$(DEMO_SHOTS)"
	@echo
	@echo "demo done (everything under $(DEMO)):"
	@echo "  per-stage ROC plot       $(DEMO)/roc/roc.png  (curves roc.csv, figures summary.json)"
	@echo "  training logs            $(DEMO)/train/{pnet,rnet,onet}/log.csv and loss_curve.png"
	@echo "  WIDER-style evaluation   $(DEMO)/eval/results.json and pr_curve.png (the demo's nets)"
	@echo "                           $(DEMO)/eval-shipped/results.json and pr_curve.png (the shipped weights)"
	@echo "  shipped weights, photo   $(DEMO)/detect/ (annotated image and JSON)"
	@echo "  identity build           $(DEMO)/recog/fold-2/manifest.json (aligned crops in $(DEMO)/recog/aligned)"
	@echo "  embedder training        $(DEMO)/train/embed-fold-2/log.csv and loss_curve.png"
	@echo "  LFW-style verification   $(DEMO)/eval-lfw/results.json, pairs.csv, roc.png (the demo's embedder)"
	@echo "                           $(DEMO)/eval-lfw-shipped/ (the shipped embedder); ONNX in $(DEMO)/export"

clean-demo: ## delete the demo's folder ($(DEMO))
	rm -rf $(DEMO)

##@ Checks
# -- checks -----------------------------------------------------------------------------------
test: $(VENV_STAMP) ## run the test suite (tests that need ../shared/data skip when it is absent)
	$(PY) -m pytest -q

test-fast: $(VENV_STAMP) ## the tests without those marked slow
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV_STAMP) ## benchmarks: data stage time/RSS, LMDB read, training samples/s (nets, embedder), detector images/s
	$(RUN) benchmarks.bench_data --wider $(WIDER) --landmarks $(LANDMARKS) --workers $(WORKERS) \
		$(if $(wildcard $(OUT)/pnet/manifest.json),--verify-builds $(OUT)/pnet)
	$(RUN) benchmarks.bench_train
	$(RUN) benchmarks.bench_embed
	$(RUN) benchmarks.bench_detector --images $(VAL_IMAGES) $(if $(MIN_FACE),--min-face $(MIN_FACE)) \
		$(if $(wildcard $(ORIGINAL)/onet.pt),--weights original:$(ORIGINAL),--weights shipped) \
		$(if $(wildcard $(FACENET_PKG)/facenet_pytorch),--facenet $(FACENET_PKG))
	$(RUN) benchmarks.bench_backends --images $(VAL_IMAGES) $(if $(MIN_FACE),--min-face $(MIN_FACE))

$(check_spaces)
