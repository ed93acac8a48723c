# MTCNN training pipeline. `make help` lists the targets; every variable below can be overridden:
#   make pnet-data WIDER=/data/WIDER LANDMARKS=/data/trainImageList.txt OUT=/data/mtcnn WORKERS=4
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

# -- values are text, never code -------------------------------------------------------------
# The variables a user sets (every `?=` below). A value given on the command line or in the
# environment is taken as the text it is: make would otherwise expand a `$(shell ...)` inside it.
USER_VARS := PYTHON VENV DATA WIDER WIDER_TXT WIDER_IMAGES LANDMARKS OUT WORKERS SEED DEVICE GEN_FLAGS GEN_FLAGS_pnet \
	GEN_FLAGS_rnet GEN_FLAGS_onet GEN_FLAGS_val TRAIN_FLAGS TRAIN_FLAGS_pnet TRAIN_FLAGS_rnet TRAIN_FLAGS_onet \
	RESUME RESTART VAL_TXT VAL_IMAGES WEIGHTS_DIR WEIGHTS IMAGES GT PRED MIN_FACE IMG DETECT_OUT \
	BACKEND EXPORT_OUT ALIGN_OUT ALIGN LARGEST LANDMARK_LIST LM_PART LM_OUT STAGE_OUT LFW LFW_IMAGES PEOPLE PAIRS \
	IDENTITIES FOLD ONLY_PEOPLE RECOG_OUT RECOG_ALIGN RECOG_SIZE RECOG_ALIGNED RECOG_BUILD EMBED_FLAGS EMBED_OUT EMBEDDER \
	LFW_FLAGS LFW_OUT CV_OUT CV_FOLDS DEMO DEMO_DATA_FLAGS DEMO_TRAIN_FLAGS DEMO_DETECT_WEIGHTS DEMO_GEN_FLAGS \
	DEMO_EMBED_FLAGS WIDER_FRACTION PY VENV_STAMP GALLERY GALLERY_OUT REBUILD THRESHOLD IDENTIFY_OUT
USER_VARS += PAIRS_CSV IMAGES_ROOT EVAL_PAIRS_OUT EVAL_PAIRS_FLAGS PAIRS_CSV_OUT
USER_VARS += IDENT_OUT IDENT_FLAGS CLUSTER_OUT CLUSTER_FLAGS
USER_VARS += CALIBRATE_OUT CALIBRATE_FAR CALIBRATE_FLAGS
USER_VARS += TEST_WORKERS
GIVEN_VARS := $(sort $(USER_VARS) $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
define newline


endef
# No value may hold a line break: make would read the rest as another line of the Makefile.
$(foreach v,$(GIVEN_VARS),$(if $(findstring $(newline),$(value $(v))),$(error $(v)="$(subst $(newline),\n,$(value $(v)))" \
	has a line break; give it on one line)))
$(foreach v,$(GIVEN_VARS),$(if $(filter command line environment environment override,$(origin $(v))), \
	$(eval override $(v) := $$(value $(v)))))
# $(call q,TEXT): TEXT as one shell word, whatever it holds ('it'\''s', quoted only when it must be,
# so that `make -n` prints plain commands); $(call qw,LIST): each word of LIST so; $(call esc,TEXT):
# TEXT for $(eval ...), where a `$` would be read as make syntax.
SHELL_SPECIAL := ' " ` $$ \ ; & | < > ( ) * ? [ ] { } ! \# ~ ^
q = $(if $(1),$(if $(or $(word 2,$(1)),$(strip $(foreach c,$(SHELL_SPECIAL),$(findstring $(c),$(1))))),'$(subst ','\'',$(1))',$(1)),'')
qw = $(foreach w,$(1),$(call q,$(w)))
esc = $(subst $$,$$$$,$(1))

# make cannot name a file whose path holds a space (it splits prerequisites at spaces), nor one with
# a character of its own syntax (`:` `;` `|` `=` `%` `#`, `\`, the wildcards `*` `?` `[`), so a
# path variable with one stops here in one line rather than in a "Circular ... dependency" puzzle
# or a rule that means something else. Quotes, `&`, `$`, backquotes and brackets are fine: every
# value reaches its command as one argument (q above).
PATH_VARS := DATA WIDER WIDER_TXT WIDER_IMAGES LANDMARKS OUT VENV VAL_TXT VAL_IMAGES WEIGHTS_DIR GT PRED IMG DETECT_OUT \
	EXPORT_OUT ALIGN_OUT LM_OUT LANDMARK_LIST STAGE_OUT DEMO LFW LFW_IMAGES PEOPLE ONLY_PEOPLE RECOG_OUT \
	RECOG_ALIGNED RECOG_BUILD EMBED_OUT EMBEDDER LFW_OUT CV_OUT WEIGHTS_PATH GALLERY GALLERY_OUT IDENTIFY_OUT
PATH_VARS += PAIRS_CSV IMAGES_ROOT EVAL_PAIRS_OUT PAIRS_CSV_OUT
PATH_VARS += IDENT_OUT CLUSTER_OUT
PATH_VARS += CALIBRATE_OUT
BACKSLASH := \$(strip)
MAKE_SYNTAX := ; : | = % * ? [ ] \# $(BACKSLASH)
check_path = $(if $(word 2,$($(1))),$(error $(call shown,$(1))" has a space, and make cannot name such files: use a \
	path without spaces (a symbolic link to it works)))$(foreach c,$(MAKE_SYNTAX),$(if $(findstring $(c),$($(1))),$(error \
	$(call shown,$(1))" holds '$(c)', which make cannot have in a file name: use a path without it (a symbolic link to it \
	works))))
shown = $(if $(filter WEIGHTS_PATH,$(1)),WEIGHTS="$(WEIGHTS),$(1)="$($(1)))
# FOLD and CV_FOLDS become parts of file names too: whole numbers only.
not_digits = $(subst 0,,$(subst 1,,$(subst 2,,$(subst 3,,$(subst 4,,$(subst 5,,$(subst 6,,$(subst 7,,$(subst 8,,$(subst \
	9,,$(1)))))))))))
$(foreach v,FOLD CV_FOLDS,$(foreach k,$(value $(v)),$(if $(call not_digits,$(k)),$(error $(v)="$(value $(v))" is not \
	a list of fold numbers (1-10 for LFW's people.txt)))))
# The paths given are checked before any rule names them; the defaults made from them, at the end.
WEIGHTS_PATH = $(patsubst original:%,%,$(filter-out shipped,$(WEIGHTS)))
$(foreach v,$(PATH_VARS),$(if $(filter command line environment environment override,$(origin $(if $(filter \
	WEIGHTS_PATH,$(v)),WEIGHTS,$(v)))),$(call check_path,$(v))))
# IDENTITIES is a list of paths (identity roots, spaces between them), and so is PAIRS for pairs-csv
# (View 1's two files joined): each path is checked so.
PATH_LIST_VARS := IDENTITIES PAIRS
$(foreach v,$(PATH_LIST_VARS),$(if $(filter command line environment environment override,$(origin $(v))),$(foreach \
	w,$($(v)),$(foreach c,$(MAKE_SYNTAX),$(if $(findstring $(c),$(w)),$(error $(v)="$($(v))" holds '$(c)' (in $(w)), \
	which make cannot have in a file name: use a path without it (a symbolic link to it works)))))))

# -- environment ----------------------------------------------------------------------------
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# Every stage runs through core.launch: Ctrl-C, during its imports too, ends it with one line.
RUN := $(call q,$(PY)) -m core.launch
VENV_STAMP := $(VENV)/.installed

# -- inputs and outputs -----------------------------------------------------------------------
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
# The shipped recipe of each build and net is a file, configs/data-<build>.toml and configs/<net>.toml
# (configs/README.md): each rule passes its file with --config and lists it as a prerequisite. Options
# given after it win: GEN_FLAGS_<build> / TRAIN_FLAGS_<net> (one build or net), then GEN_FLAGS /
# TRAIN_FLAGS (every one), e.g. GEN_FLAGS_rnet=--mine-jittered-faces.
RECIPES := configs
recipe = $(RECIPES)/$(1).toml
GEN_FLAGS ?=
GEN_FLAGS_pnet ?=
GEN_FLAGS_rnet ?=
GEN_FLAGS_onet ?=
GEN_FLAGS_val ?=
TRAIN_FLAGS ?=
TRAIN_FLAGS_pnet ?=
TRAIN_FLAGS_rnet ?=
TRAIN_FLAGS_onet ?=
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

# The committed weights are written only by an explicit command (python -m trainers.train ...
# --overwrite-shipped, docs/pipeline.md), never by a make target that trains a net into WEIGHTS_DIR.
ifeq ($(abspath $(WEIGHTS_DIR)),$(abspath weights))
$(error WEIGHTS_DIR=$(WEIGHTS_DIR) is the committed weights' folder, which make never trains into: give another \
	folder (copy the shipped .pt files there to mine with them))
endif

# -- content stamps ---------------------------------------------------------------------------
# make trusts modification times; these make it trust contents (core/make_inputs.py). Each rule
# that runs a stage ends with $(stamp), recording its prerequisites' digests (a folder's: its
# listing) beside the target, and is named in STAMPED. When the Makefile is read, a target whose
# inputs changed in content depends on FORCE, whatever the mtimes, and one whose inputs are as
# recorded is touched if older than them: an unchanged copy of a build folder is up to date.
MAKE_INPUTS = $(call q,$(if $(wildcard $(PY)),$(PY),$(PYTHON))) core/make_inputs.py
stamp = $(MAKE_INPUTS) write $(call q,$@) $(call qw,$^)
STAMPED :=

# -- code prerequisites ---------------------------------------------------------------------
# Each stage's code is its module's import closure within the project (core/make_deps.py reads the
# imports; nothing is kept by hand): CODE_<module> lists the files, in an include file remade when a
# source changes, as a compiler's -MMD files are. The data builds' fingerprint digests the same lists
# (prepare/fingerprint.py), so an edit that make rebuilds for also changes the build.
# It is remade as the Makefile is read (a rule for it would make `make -q` report every target out of
# date once after each edit of a source).
CODE_DEPS := build/make/code.mk
CODE_PACKAGES := core annotations lmdb_builders detector prepare trainers recognition evaluation demo benchmarks
ifneq ($(if $(wildcard $(CODE_DEPS)),$(shell find $(CODE_PACKAGES) -name '*.py' -newer $(CODE_DEPS) -print -quit),stale),)
$(shell $(call q,$(PYTHON)) core/make_deps.py --out $(CODE_DEPS))
endif
include $(CODE_DEPS)

.PHONY: recog-data train-embed eval-lfw cv-lfw compare export-embedder enroll identify help setup pnet-data rnet-data onet-data val-data train-pnet train-rnet train-onet roc eval-wider eval-landmarks stage-recall detect \
	export align FORCE \
	stats demo test test-fast bench clean-demo original-weights

##@ Set-up
help: ## list the targets, by stage
	@awk '/^##@ / { printf "\n%s\n", substr($$0, 5) } /^[a-z][a-zA-Z_-]*:.*## / { split($$0, a, ":.*## "); \
		printf "  %-18s%s\n", a[1], a[2] }' $(call qw,$(MAKEFILE_LIST))

setup: $(VENV_STAMP) ## create .venv and install the pinned dependencies

$(VENV_STAMP): pyproject.toml
	$(call q,$(PYTHON)) -m venv $(call q,$(VENV)) && $(call q,$(VENV))/bin/pip install -q --upgrade pip \
		&& $(call q,$(VENV))/bin/pip install -q -e '.[test]' && touch $(call q,$@)

##@ Detector: sample builds (data stages)
# -- data stages ------------------------------------------------------------------------------
# The arguments every build reads its data with
DATA_ARGS = --wider-txt $(call q,$(TRAIN_TXT)) --wider-images $(call q,$(WIDER_IMAGES)) --landmarks $(call q,$(LANDMARKS))
pnet-data: $(OUT)/pnet/manifest.json ## WIDER + landmark list -> 12 px LMDB shards in $(OUT)/pnet

$(OUT)/pnet/manifest.json: $(OUT)/settings/pnet.txt $(call recipe,data-pnet) $(TRAIN_TXT) $(wildcard $(WIDER_IMAGES)) \
		$(LANDMARKS) $(CODE_prepare.generate.unmined) | $(VENV_STAMP)
	$(RUN) prepare.generate $(DATA_ARGS) --out $(call q,$(OUT)/pnet) --net-size 12 --seed $(call q,$(SEED)) \
		--workers $(call q,$(WORKERS)) --config $(call q,$(call recipe,data-pnet)) $(call qw,$(GEN_FLAGS_pnet) $(GEN_FLAGS))
	$(stamp)

rnet-data: $(OUT)/rnet/manifest.json ## mine 24 px samples with the trained P-Net -> $(OUT)/rnet

$(OUT)/rnet/manifest.json: $(OUT)/settings/rnet.txt $(call recipe,data-rnet) $(WEIGHTS_DIR)/pnet.pt $(TRAIN_TXT) \
		$(wildcard $(WIDER_IMAGES)) $(LANDMARKS) $(CODE_prepare.generate) | $(VENV_STAMP)
	$(RUN) prepare.generate $(DATA_ARGS) --out $(call q,$(OUT)/rnet) --net-size 24 --mine-with $(call q,$(WEIGHTS_DIR)) \
		--device $(call q,$(DEVICE)) --seed $(call q,$(SEED)) --workers $(call q,$(WORKERS)) \
		--config $(call q,$(call recipe,data-rnet)) $(call qw,$(GEN_FLAGS_rnet) $(GEN_FLAGS))
	$(stamp)

onet-data: $(OUT)/onet/manifest.json ## mine 48 px samples with P-Net then R-Net -> $(OUT)/onet

$(OUT)/onet/manifest.json: $(OUT)/settings/onet.txt $(call recipe,data-onet) $(WEIGHTS_DIR)/pnet.pt $(WEIGHTS_DIR)/rnet.pt \
		$(TRAIN_TXT) $(wildcard $(WIDER_IMAGES)) $(LANDMARKS) $(CODE_prepare.generate) | $(VENV_STAMP)
	$(RUN) prepare.generate $(DATA_ARGS) --out $(call q,$(OUT)/onet) --net-size 48 --mine-with $(call q,$(WEIGHTS_DIR)) \
		--device $(call q,$(DEVICE)) --seed $(call q,$(SEED)) --workers $(call q,$(WORKERS)) \
		--config $(call q,$(call recipe,data-onet)) $(call qw,$(GEN_FLAGS_onet) $(GEN_FLAGS))
	$(stamp)

val-data: $(OUT)/val/manifest.json ## held-out 12/24/48 px samples from WIDER val + held-out landmark faces

$(OUT)/val/manifest.json: $(OUT)/settings/val.txt $(call recipe,data-val) $(VAL_TXT) $(wildcard $(VAL_IMAGES)) $(LANDMARKS) \
		$(CODE_prepare.generate.unmined) | $(VENV_STAMP)
	$(RUN) prepare.generate --wider-txt $(call q,$(VAL_TXT)) --wider-images $(call q,$(VAL_IMAGES)) \
		--landmarks $(call q,$(LANDMARKS)) --out $(call q,$(OUT)/val) --net-size 12 24 48 --landmark-part holdout \
		--seed $(call q,$(SEED)) --workers $(call q,$(WORKERS)) --config $(call q,$(call recipe,data-val)) \
		$(call qw,$(GEN_FLAGS_val) $(GEN_FLAGS))
	$(stamp)
STAMPED += $(foreach build,pnet rnet onet val,$(OUT)/$(build)/manifest.json)

##@ Detector: training
# -- training: each net's final weights land in $(WEIGHTS_DIR), the folder mining and evaluation read
train-pnet: $(WEIGHTS_DIR)/pnet.pt ## train P-Net on $(OUT)/pnet
train-rnet: $(WEIGHTS_DIR)/rnet.pt ## train R-Net on $(OUT)/rnet
train-onet: $(WEIGHTS_DIR)/onet.pt ## train O-Net on $(OUT)/onet

$(WEIGHTS_DIR)/%.pt: $(OUT)/%/manifest.json $(OUT)/train/%/flags.txt $(call recipe,%) $(CODE_trainers.train) | $(VENV_STAMP)
	$(RUN) trainers.train --net $* --data $(call q,$(OUT)/$*) --out $(call q,$(OUT)/train/$*) --export $(call q,$@) \
		--device $(call q,$(DEVICE)) --seed $(call q,$(SEED)) $(if $(RESUME),--resume) $(if $(RESTART),--restart) \
		--config $(call q,$(call recipe,$*)) $(call qw,$(TRAIN_FLAGS_$*) $(TRAIN_FLAGS))
	$(stamp)
STAMPED += $(foreach net,pnet rnet onet,$(WEIGHTS_DIR)/$(net).pt)

# $(call settings_file,FILE,SETTINGS): the rule writing FILE, which holds a rule's settings and is a
# prerequisite of its result. It depends on FORCE only when it holds other settings than these, so new
# settings redo the result while an unchanged rerun (and make -q) finds it up to date, as with any input
# file. SETTINGS reaches the rule as text ($$(2) inside the eval: never parsed as make syntax).
same_text = $(and $(findstring x$(1)x,x$(2)x),$(findstring x$(2)x,x$(1)x))
settings_file = $(eval $(call esc,$(1)): SETTINGS := $$(2))$(eval $(call esc,$(1)): $(if $(call same_text,$(2),$(if \
	$(wildcard $(1)),$(file <$(1)))),,FORCE) ; @mkdir -p $$(call q,$$(@D)) && printf '%s\n' $$(call q,$$(SETTINGS)) > $$(call q,$$@))

# Each net's training settings live in $(OUT)/train/<net>/flags.txt, a prerequisite of its weights
# (the recipe file's contents are one too, and stamped).
train_settings = device=$(DEVICE) seed=$(SEED) recipe=$(call recipe,$(1)) flags=$(strip $(TRAIN_FLAGS_$(1)) $(TRAIN_FLAGS))
$(foreach net,pnet rnet onet,$(call settings_file,$(OUT)/train/$(net)/flags.txt,$(call train_settings,$(net))))

# Each build's sample settings live in $(OUT)/settings/<build>.txt, a prerequisite of its manifest
# (settings_file above). The worker count is not among them: it changes no byte of a build.
data_settings = seed=$(SEED)$(if $(filter rnet onet,$(1)), device=$(DEVICE))$(if $(and $(WIDER_FRACTION),$(filter-out val,$(1))), \
	wider_fraction=$(WIDER_FRACTION)) recipe=$(call recipe,data-$(1)) flags=$(strip $(GEN_FLAGS_$(1)) $(GEN_FLAGS))
$(foreach build,pnet rnet onet val,$(call settings_file,$(OUT)/settings/$(build).txt,$(call data_settings,$(build))))

$(call settings_file,$(OUT)/settings/subset.txt,fraction=$(WIDER_FRACTION))
$(OUT)/wider_train_subset.txt: $(OUT)/settings/subset.txt $(WIDER_TXT) $(CODE_annotations.subset) | $(VENV_STAMP)
	$(RUN) annotations.subset --wider-txt $(call q,$(WIDER_TXT)) --fraction $(call q,$(WIDER_FRACTION)) --out $(call q,$@)
	$(stamp)
STAMPED += $(OUT)/wider_train_subset.txt

##@ Detector: the original weights, evaluation and use
# -- the original MTCNN weights (facenet-pytorch's wheel, fetched, never installed) -------------
ORIGINAL := weights/original
FACENET_PKG := build/facenet-pytorch
original-weights: $(ORIGINAL)/onet.pt ## fetch the original P/R/O-Net weights into weights/original (network)

$(ORIGINAL)/onet.pt: $(CODE_trainers.original_weights) | $(VENV_STAMP)
	$(RUN) trainers.original_weights --out $(ORIGINAL) --package-dir $(FACENET_PKG)

# -- evaluation -------------------------------------------------------------------------------
roc: $(OUT)/roc/summary.json ## per-stage ROC on held-out samples -> $(OUT)/roc/roc.png

$(OUT)/roc/summary.json: $(OUT)/val/manifest.json $(WEIGHTS_DIR)/pnet.pt $(WEIGHTS_DIR)/rnet.pt $(WEIGHTS_DIR)/onet.pt \
		$(CODE_evaluation.roc) | $(VENV_STAMP)
	$(RUN) evaluation.roc --val-data $(call q,$(OUT)/val) --weights $(call q,$(WEIGHTS_DIR)) --out $(call q,$(OUT)/roc) \
		--device $(call q,$(DEVICE))
	$(stamp)
STAMPED += $(OUT)/roc/summary.json

# The weights files a WEIGHTS spec (shipped | original:PATH | folder) names: results depend on them.
weights_files = $(wildcard $(addprefix $(if $(filter shipped,$(1)),weights,$(patsubst original:%,%,$(1)))/,pnet.pt rnet.pt onet.pt mtcnn.json))
# The detector's options every stage that runs it takes from make
MIN_FACE_ARG = $(if $(MIN_FACE),--min-face $(call q,$(MIN_FACE)))

# eval-wider: redone when the weights files, the ground truth, the code or the settings change; the
# evaluator records the weights files' sha256 and detects every image again when they differ
eval-wider: $(PRED)/results.json ## WIDER AP easy/medium/hard: IMAGES= GT= PRED= WEIGHTS= MIN_FACE=

$(call settings_file,$(PRED)/.make-settings,weights=$(WEIGHTS) backend=$(BACKEND) images=$(IMAGES) min_face=$(MIN_FACE))
$(PRED)/results.json: $(PRED)/.make-settings $(call weights_files,$(WEIGHTS)) $(wildcard $(GT)/*.mat) \
		$(CODE_evaluation.wider_eval) | $(VENV_STAMP)
	$(RUN) evaluation.wider_eval --images $(call q,$(IMAGES)) --gt $(call q,$(GT)) --pred $(call q,$(PRED)) \
		--weights $(call q,$(WEIGHTS)) $(MIN_FACE_ARG) --device $(call q,$(DEVICE)) --backend $(call q,$(BACKEND))
	$(stamp)
STAMPED += $(PRED)/results.json

WEIGHTS_TAG = $(subst /,_,$(subst :,_,$(WEIGHTS)))
# eval-landmarks: the landmark list and which of its faces (holdout: those no training build saw)
LANDMARK_LIST ?= $(LANDMARKS)
LM_PART ?= holdout
LM_OUT ?= $(OUT)/eval-landmarks/$(WEIGHTS_TAG)
eval-landmarks: $(LM_OUT)/results.json ## landmark NME, failure rate and CED of WEIGHTS= on LANDMARK_LIST= -> LM_OUT=

$(call settings_file,$(LM_OUT)/.make-settings,weights=$(WEIGHTS) list=$(LANDMARK_LIST) part=$(LM_PART) min_face=$(MIN_FACE))
$(LM_OUT)/results.json: $(LM_OUT)/.make-settings $(LANDMARK_LIST) $(call weights_files,$(WEIGHTS)) \
		$(CODE_evaluation.landmarks) | $(VENV_STAMP)
	$(RUN) evaluation.landmarks --landmarks $(call q,$(LANDMARK_LIST)) --weights $(call q,$(WEIGHTS)) --out $(call q,$(LM_OUT)) \
		--part $(call q,$(LM_PART)) $(MIN_FACE_ARG) --device $(call q,$(DEVICE))
	$(stamp)
STAMPED += $(LM_OUT)/results.json

# stage-recall: which net loses the faces; redone when the weights, ground truth, code or settings change
STAGE_OUT ?= $(OUT)/stage-recall/$(WEIGHTS_TAG)
stage-recall: $(STAGE_OUT)/results.json ## recall of each stage's boxes on WIDER val faces (easy/medium/hard, by size) of WEIGHTS= -> STAGE_OUT=

$(call settings_file,$(STAGE_OUT)/.make-settings,weights=$(WEIGHTS) images=$(IMAGES) min_face=$(MIN_FACE))
$(STAGE_OUT)/results.json: $(STAGE_OUT)/.make-settings $(call weights_files,$(WEIGHTS)) $(wildcard $(GT)/*.mat) \
		$(CODE_evaluation.stage_recall) | $(VENV_STAMP)
	$(RUN) evaluation.stage_recall --images $(call q,$(IMAGES)) --gt $(call q,$(GT)) --weights $(call q,$(WEIGHTS)) \
		--out $(call q,$(STAGE_OUT)) $(MIN_FACE_ARG) --device $(call q,$(DEVICE))
	$(stamp)
STAMPED += $(STAGE_OUT)/results.json

detect: | $(VENV_STAMP) ## detect faces in IMG= with WEIGHTS= (default shipped) -> DETECT_OUT=
	@test -n $(call q,$(IMG)) || { echo "usage: make detect IMG=photo.jpg [WEIGHTS=shipped|original:PATH|folder] [BACKEND=torch|onnx] [DETECT_OUT=folder]" >&2; exit 2; }
	$(RUN) detector.detect --image $(call q,$(IMG)) --weights $(call q,$(WEIGHTS)) --out $(call q,$(DETECT_OUT)) \
		$(MIN_FACE_ARG) --device $(call q,$(DEVICE)) --backend $(call q,$(BACKEND))

export: $(EXPORT_OUT)/mtcnn.json ## WEIGHTS= as ONNX files + mtcnn.json (how to run the cascade) -> EXPORT_OUT=

$(call settings_file,$(EXPORT_OUT)/.make-settings,weights=$(WEIGHTS))
$(EXPORT_OUT)/mtcnn.json: $(EXPORT_OUT)/.make-settings $(call weights_files,$(WEIGHTS)) $(CODE_detector.export) \
		| $(VENV_STAMP)
	$(RUN) detector.export --weights $(call q,$(WEIGHTS)) --out $(call q,$(EXPORT_OUT))
	$(stamp)
STAMPED += $(EXPORT_OUT)/mtcnn.json

align: | $(VENV_STAMP) ## crop the faces of every image under IMAGES= -> ALIGN_OUT= (LARGEST=1, ALIGN=similarity)
	$(RUN) detector.align --images $(call q,$(IMAGES)) --out $(call q,$(ALIGN_OUT)) --weights $(call q,$(WEIGHTS)) \
		--backend $(call q,$(BACKEND)) $(MIN_FACE_ARG) --align $(call q,$(ALIGN)) $(if $(filter-out 0,$(LARGEST)),--largest) \
		--device $(call q,$(DEVICE))

FORCE:

stats: | $(VENV_STAMP) ## annotation statistics table and face-size histogram ($(OUT)/stats/face_sizes.png)
	$(RUN) annotations.stats --wider $(call q,$(WIDER_TXT)) --images $(call q,$(WIDER_IMAGES)) --landmarks $(call q,$(LANDMARKS)) \
		--out-png $(call q,$(OUT)/stats/face_sizes.png)

##@ Recognition: aligned identity faces -> embedder -> LFW verification
# -- recognition ------------------------------------------------------------------------------
# LFW's protocol files, and its images as <name>/<name>_NNNN.jpg (lfw.tgz, or the snapshot in its README)
LFW ?= $(DATA)/lfw
LFW_IMAGES ?= $(LFW)/images
PEOPLE ?= $(LFW)/people.txt
PAIRS ?= $(LFW)/pairs.txt
# The identity folders <root>/<identity>/<image> to train on, LFW's first (LFW by default): IDENTITIES="lfw/images
# outside/set" adds an outside set, whose identities are <its folder's name>/<name> (python -m prepare.identity_links
# makes one of CelebA's flat folder and identity list)
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
RECOG_SETTINGS = weights=$(WEIGHTS) align=$(RECOG_ALIGN) size=$(RECOG_SIZE) min_face=$(MIN_FACE) device=$(DEVICE)
RECOG_ARGS = --weights $(call q,$(WEIGHTS)) --align $(call q,$(RECOG_ALIGN)) --image-size $(call q,$(RECOG_SIZE)) \
	$(MIN_FACE_ARG) --device $(call q,$(DEVICE))

# Every identity build, training and scoring, the one of these variables (recog-data, train-embed,
# eval-lfw) and cv-lfw's ten, keeps its settings in a file beside it (settings_file), so that a new
# EMBED_FLAGS, WEIGHTS, MIN_FACE or RECOG_SIZE redoes each fold that it changes, and a train-embed
# FOLD=k with other flags makes cv-lfw retrain that fold rather than mix two recipes.
recog_build_settings = identities=$(IDENTITIES) fold=$(1) only=$(2) $(RECOG_SETTINGS)
embed_settings = device=$(DEVICE) seed=$(SEED) recipe=$(call recipe,embedder) flags=$(EMBED_FLAGS)
# settings_file once per file: recog-data FOLD=k names the same build as cv-lfw's fold k
settings_once = $(if $(filter $(1),$(SETTINGS_DONE)),,$(eval SETTINGS_DONE += $$(1))$(call settings_file,$(1),$(2)))
SETTINGS_DONE :=

recog-data: $(RECOG_BUILD)/manifest.json ## detect + align one face per image of IDENTITIES= -> LMDB shards (FOLD=k leaves out fold k)

$(call settings_once,$(RECOG_BUILD)/.make-settings,$(call recog_build_settings,$(FOLD),$(ONLY_PEOPLE)))
$(RECOG_BUILD)/manifest.json: $(RECOG_BUILD)/.make-settings $(wildcard $(IDENTITIES)) $(if $(FOLD),$(PEOPLE)) $(ONLY_PEOPLE) \
		$(CODE_prepare.identities) | $(VENV_STAMP)
	$(RUN) prepare.identities --images $(call qw,$(IDENTITIES)) --out $(call q,$(RECOG_BUILD)) \
		--aligned $(call q,$(RECOG_ALIGNED)) $(if $(FOLD),--people $(call q,$(PEOPLE)) --fold $(call q,$(FOLD))) \
		$(if $(ONLY_PEOPLE),--only-people $(call q,$(ONLY_PEOPLE))) $(RECOG_ARGS)
	$(stamp)
STAMPED += $(RECOG_BUILD)/manifest.json

train-embed: $(EMBED_OUT)/embedder.pt ## train the embedder on the recog-data build (EMBED_FLAGS=, FOLD=, RESUME=1, RESTART=1)

$(call settings_once,$(EMBED_OUT)/flags.txt,$(embed_settings))
$(EMBED_OUT)/embedder.pt: $(RECOG_BUILD)/manifest.json $(EMBED_OUT)/flags.txt $(call recipe,embedder) $(CODE_trainers.embed) \
		| $(VENV_STAMP)
	$(RUN) trainers.embed --data $(call q,$(RECOG_BUILD)) --out $(call q,$(EMBED_OUT)) --device $(call q,$(DEVICE)) \
		--seed $(call q,$(SEED)) $(if $(RESUME),--resume) $(if $(RESTART),--restart) \
		--config $(call q,$(call recipe,embedder)) $(call qw,$(EMBED_FLAGS))
	$(stamp)
STAMPED += $(EMBED_OUT)/embedder.pt

eval-lfw: $(LFW_OUT)/results.json ## LFW 10-fold verification of EMBEDDER= on PAIRS= (FOLD=k: fold k only) -> LFW_OUT=

lfw_settings = pairs=$(PAIRS) images=$(LFW_IMAGES) fold=$(1) $(RECOG_SETTINGS)
$(call settings_once,$(LFW_OUT)/.make-settings,embedder=$(EMBEDDER) $(call lfw_settings,$(FOLD)) $(LFW_FLAGS))
$(LFW_OUT)/results.json: $(LFW_OUT)/.make-settings $(PAIRS) $(wildcard $(LFW_IMAGES)) $(call embedder_files,$(EMBEDDER)) \
		$(CODE_evaluation.lfw) | $(VENV_STAMP)
	$(RUN) evaluation.lfw --images $(call q,$(LFW_IMAGES)) --pairs $(call q,$(PAIRS)) --out $(call q,$(LFW_OUT)) \
		--embedder $(call q,$(EMBEDDER)) --aligned $(call q,$(RECOG_ALIGNED)) $(if $(FOLD),--fold $(call q,$(FOLD))) \
		$(RECOG_ARGS) $(call qw,$(LFW_FLAGS))
	$(stamp)
STAMPED += $(LFW_OUT)/results.json

# eval-pairs: the same scoring on any pairs list (evaluation/pairs.py): PAIRS_CSV= is a CSV first,second,same[,fold]
# of image paths relative to IMAGES_ROOT= (annotations/pairs_csv.py); with a fold column k-fold over its folds, without
# ten folds made with SEED= (stratified); EVAL_PAIRS_FLAGS=, e.g. --num-folds 5 --allow-missing. A CSV names no people,
# so nothing refuses pairs of people EMBEDDER= learnt: results.json says what it was trained on.
PAIRS_CSV ?=
IMAGES_ROOT ?=
EVAL_PAIRS_FLAGS ?=
EVAL_PAIRS_OUT ?= $(OUT)/eval-pairs/$(basename $(notdir $(PAIRS_CSV)))-$(subst /,_,$(EMBEDDER))
.PHONY: eval-pairs pairs-csv
eval-pairs: $(EVAL_PAIRS_OUT)/results.json ## eval-lfw's protocol on any PAIRS_CSV= (first,second,same[,fold]) under IMAGES_ROOT= -> EVAL_PAIRS_OUT=

$(call settings_once,$(EVAL_PAIRS_OUT)/.make-settings,embedder=$(EMBEDDER) pairs=$(PAIRS_CSV) images=$(IMAGES_ROOT) \
	seed=$(SEED) $(RECOG_SETTINGS) flags=$(EVAL_PAIRS_FLAGS))
$(EVAL_PAIRS_OUT)/results.json: $(EVAL_PAIRS_OUT)/.make-settings $(PAIRS_CSV) $(wildcard $(IMAGES_ROOT)) \
		$(call embedder_files,$(EMBEDDER)) $(CODE_evaluation.pairs) | $(VENV_STAMP)
	@test -n $(call q,$(PAIRS_CSV)) -a -n $(call q,$(IMAGES_ROOT)) || { echo "usage: make eval-pairs PAIRS_CSV=pairs.csv IMAGES_ROOT=<folder its paths start from> [EMBEDDER=shipped] [EVAL_PAIRS_OUT=folder]" >&2; exit 2; }
	$(RUN) evaluation.pairs --pairs $(call q,$(PAIRS_CSV)) --images $(call q,$(IMAGES_ROOT)) --out $(call q,$(EVAL_PAIRS_OUT)) \
		--embedder $(call q,$(EMBEDDER)) --aligned $(call q,$(RECOG_ALIGNED)) --seed $(call q,$(SEED)) $(RECOG_ARGS) \
		$(call qw,$(EVAL_PAIRS_FLAGS))
	$(stamp)
STAMPED += $(EVAL_PAIRS_OUT)/results.json

# pairs-csv: LFW's PAIRS= (pairs.txt, or View 1's pairsDevTrain.txt and/or pairsDevTest.txt, joined) as a pairs CSV
# for eval-pairs and calibrate; named after the files, joined by + (files_name)
files_name = $(subst $() ,+,$(strip $(basename $(notdir $(1)))))
PAIRS_CSV_OUT ?= $(OUT)/pairs-csv/$(call files_name,$(PAIRS)).csv
pairs-csv: $(PAIRS_CSV_OUT) ## LFW's PAIRS= (one file, or View 1's two joined) as a pairs CSV (first,second,same[,fold]) -> PAIRS_CSV_OUT=

# The other readers of PAIRS (eval-lfw, cv-lfw, calibrate without PAIRS_CSV) take one file.
PAIRS_READERS = eval-lfw cv-lfw $(if $(PAIRS_CSV),,calibrate)
$(if $(and $(word 2,$(PAIRS)),$(filter $(PAIRS_READERS),$(MAKECMDGOALS))),$(error \
	PAIRS="$(PAIRS)" names several files, which only pairs-csv joins (make pairs-csv PAIRS="$(PAIRS)", then \
	PAIRS_CSV=$(PAIRS_CSV_OUT) IMAGES_ROOT=<images>)))
# Its settings file: another list of files under the same PAIRS_CSV_OUT makes the CSV again.
PAIRS_CSV_SETTINGS = $(dir $(PAIRS_CSV_OUT)).$(notdir $(PAIRS_CSV_OUT)).make-settings
$(call settings_once,$(PAIRS_CSV_SETTINGS),pairs=$(PAIRS))
$(PAIRS_CSV_OUT): $(PAIRS_CSV_SETTINGS) $(PAIRS) $(CODE_annotations.pairs_csv) | $(VENV_STAMP)
	@test -n $(call q,$(strip $(PAIRS))) || { echo "usage: make pairs-csv PAIRS=<LFW pairs file, or View 1's two> [PAIRS_CSV_OUT=file.csv]" >&2; exit 2; }
	$(RUN) annotations.pairs_csv --lfw $(call qw,$(PAIRS)) --out $(call q,$@)
	$(stamp)
STAMPED += $(PAIRS_CSV_OUT)

# cv-lfw: ten builds, ten trainings, ten scorings (each a real file, so it resumes fold by fold)
CV_OUT ?= $(OUT)/cv-lfw
CV_FOLDS ?= 1 2 3 4 5 6 7 8 9 10
cv-lfw: $(CV_OUT)/results.json ## train on nine folds' people and score the tenth, for each of LFW's ten folds

$(foreach k,$(CV_FOLDS),$(call settings_once,$(RECOG_OUT)/fold-$(k)/.make-settings,$(call recog_build_settings,$(k),)) \
	$(call settings_once,$(OUT)/train/embed-fold-$(k)/flags.txt,$(embed_settings)) \
	$(call settings_once,$(CV_OUT)/fold-$(k)/.make-settings,$(call lfw_settings,$(k))))

# Named here as targets: files made only by pattern rules for another pattern rule's sake would be
# "intermediate", and make would delete each fold's build manifest and trained embedder once scored.
$(foreach k,$(CV_FOLDS),$(eval $(call esc,$(RECOG_OUT)/fold-$(k)/manifest.json $(OUT)/train/embed-fold-$(k)/embedder.pt):))

$(RECOG_OUT)/fold-%/manifest.json: $(RECOG_OUT)/fold-%/.make-settings $(wildcard $(IDENTITIES)) $(PEOPLE) $(CODE_prepare.identities) \
		| $(VENV_STAMP)
	$(RUN) prepare.identities --images $(call qw,$(IDENTITIES)) --out $(call q,$(@D)) --aligned $(call q,$(RECOG_ALIGNED)) \
		--people $(call q,$(PEOPLE)) --fold $* $(RECOG_ARGS)
	$(stamp)

$(OUT)/train/embed-fold-%/embedder.pt: $(RECOG_OUT)/fold-%/manifest.json $(OUT)/train/embed-fold-%/flags.txt \
		$(call recipe,embedder) $(CODE_trainers.embed) | $(VENV_STAMP)
	$(RUN) trainers.embed --data $(call q,$(RECOG_OUT)/fold-$*) --out $(call q,$(@D)) --device $(call q,$(DEVICE)) \
		--seed $(call q,$(SEED)) $(if $(RESUME),--resume) $(if $(RESTART),--restart) \
		--config $(call q,$(call recipe,embedder)) $(call qw,$(EMBED_FLAGS))
	$(stamp)

$(CV_OUT)/fold-%/results.json: $(OUT)/train/embed-fold-%/embedder.pt $(CV_OUT)/fold-%/.make-settings $(PAIRS) \
		$(wildcard $(LFW_IMAGES)) $(CODE_evaluation.lfw) | $(VENV_STAMP)
	$(RUN) evaluation.lfw --images $(call q,$(LFW_IMAGES)) --pairs $(call q,$(PAIRS)) \
		--out $(call q,$(@D)) --embedder $(call q,$<) --aligned $(call q,$(RECOG_ALIGNED)) --fold $* $(RECOG_ARGS)
	$(stamp)

$(CV_OUT)/results.json: $(foreach k,$(CV_FOLDS),$(CV_OUT)/fold-$(k)/results.json) $(CODE_evaluation.lfw_cv) \
		| $(VENV_STAMP)
	$(RUN) evaluation.lfw_cv --out $(call q,$@) --folds $(call qw,$(filter %/results.json,$^))
	$(stamp)
STAMPED += $(foreach k,$(CV_FOLDS),$(RECOG_OUT)/fold-$(k)/manifest.json $(OUT)/train/embed-fold-$(k)/embedder.pt \
	$(CV_OUT)/fold-$(k)/results.json) $(CV_OUT)/results.json

compare: | $(VENV_STAMP) ## squared distances between the faces of IMAGES="a.jpg b.jpg ..." (EMBEDDER=, WEIGHTS=)
	$(RUN) recognition.compare --images $(call qw,$(IMAGES)) --embedder $(call q,$(EMBEDDER)) --weights $(call q,$(WEIGHTS)) \
		--align $(call q,$(RECOG_ALIGN)) --image-size $(call q,$(RECOG_SIZE)) $(if $(THRESHOLD),--threshold $(call q,$(THRESHOLD)))

export-embedder: $(EXPORT_OUT)/embedder.json ## EMBEDDER= as ONNX (embedder.onnx, checked against torch) + embedder.json

$(call settings_file,$(EXPORT_OUT)/.make-settings-embedder,embedder=$(EMBEDDER))
$(EXPORT_OUT)/embedder.json: $(EXPORT_OUT)/.make-settings-embedder $(CODE_recognition.export_embedder) \
		$(call embedder_files,$(EMBEDDER)) | $(VENV_STAMP)
	$(RUN) recognition.export_embedder --embedder $(call q,$(EMBEDDER)) --out $(call q,$(EXPORT_OUT))
	$(stamp)
STAMPED += $(EXPORT_OUT)/embedder.json

# enroll: the faces of GALLERY=<root>/<identity>/<image> (one per image, aligned as recog-data aligns),
# embedded by EMBEDDER= into GALLERY_OUT/gallery.npz; enrolling again embeds only new or changed photos
# and drops removed ones (REBUILD=1: every photo again, also for another embedder)
GALLERY ?=
GALLERY_OUT ?= $(OUT)/gallery
REBUILD ?=
# compare / identify: the squared distance at or above which two faces are not one person (0-4); empty: the
# embedder's calibrated threshold (make calibrate), else 1.35 with a warning; cluster: its linkage threshold
# (empty: its own 0.85, chosen for clustering on View 1, not the calibrated pair threshold)
THRESHOLD ?=
IDENTIFY_OUT ?= $(OUT)/identify
enroll: $(GALLERY_OUT)/gallery.npz ## embed the faces of GALLERY=<root>/<identity>/<image> -> GALLERY_OUT= (again: new photos only)

$(call settings_file,$(GALLERY_OUT)/.make-settings,embedder=$(EMBEDDER) $(RECOG_SETTINGS) rebuild=$(REBUILD))
$(GALLERY_OUT)/gallery.npz: $(GALLERY_OUT)/.make-settings $(wildcard $(GALLERY)) $(call embedder_files,$(EMBEDDER)) \
		$(call weights_files,$(WEIGHTS)) $(CODE_recognition.enroll) | $(VENV_STAMP)
	@test -n $(call q,$(GALLERY)) || { echo "usage: make enroll GALLERY=<root>/<identity>/<image> [GALLERY_OUT=folder] [EMBEDDER=shipped] [REBUILD=1]" >&2; exit 2; }
	$(RUN) recognition.enroll --gallery $(call q,$(GALLERY)) --out $(call q,$(GALLERY_OUT)) --embedder $(call q,$(EMBEDDER)) \
		$(RECOG_ARGS) $(if $(filter-out 0,$(REBUILD)),--rebuild)
	$(stamp)
STAMPED += $(GALLERY_OUT)/gallery.npz
# A failed enroll leaves the gallery whole (the old one, or the faces embedded so far): make must not
# delete it as .DELETE_ON_ERROR would, since the next enroll goes on from it.
.PRECIOUS: $(GALLERY_OUT)/gallery.npz

identify: | $(VENV_STAMP) ## name every face in IMAGES= (files or folders) against GALLERY_OUT= -> IDENTIFY_OUT= (THRESHOLD=)
	$(RUN) recognition.identify --images $(call qw,$(IMAGES)) --gallery $(call q,$(GALLERY_OUT)/gallery.npz) \
		--out $(call q,$(IDENTIFY_OUT)) --embedder $(call q,$(EMBEDDER)) $(RECOG_ARGS) \
		$(if $(THRESHOLD),--threshold $(call q,$(THRESHOLD)))

# eval-ident: identification on the unseen people of LFW fold FOLD= (evaluation/ident.py): gallery = each
# person's first image, known probes = their others, unknown probes = the one-image people's; closed-set
# rank-1/5 and open-set DIR at FAR 0.01/0.1 -> IDENT_OUT=results.json and probes.csv (IDENT_FLAGS=, e.g. --fars 0.001 0.01)
IDENT_OUT ?= $(OUT)/eval-ident/$(subst /,_,$(EMBEDDER))$(if $(FOLD),-fold-$(FOLD))
IDENT_FLAGS ?=
.PHONY: eval-ident cluster
eval-ident: $(IDENT_OUT)/results.json ## rank-1/5 and DIR@FAR 0.01/0.1 of EMBEDDER= on LFW fold FOLD=k's unseen people -> IDENT_OUT=

$(call settings_once,$(IDENT_OUT)/.make-settings,embedder=$(EMBEDDER) people=$(PEOPLE) images=$(LFW_IMAGES) fold=$(FOLD) \
	$(RECOG_SETTINGS) flags=$(IDENT_FLAGS))
$(IDENT_OUT)/results.json: $(IDENT_OUT)/.make-settings $(PEOPLE) $(wildcard $(LFW_IMAGES)) $(call embedder_files,$(EMBEDDER)) \
		$(CODE_evaluation.ident) | $(VENV_STAMP)
	$(RUN) evaluation.ident --images $(call q,$(LFW_IMAGES)) --people $(call q,$(PEOPLE)) --out $(call q,$(IDENT_OUT)) \
		--embedder $(call q,$(EMBEDDER)) --aligned $(call q,$(RECOG_ALIGNED)) $(if $(FOLD),--fold $(call q,$(FOLD))) \
		$(RECOG_ARGS) $(call qw,$(IDENT_FLAGS))
	$(stamp)
STAMPED += $(IDENT_OUT)/results.json

# cluster: the faces of IMAGES=folder grouped by person without names (recognition/cluster.py; average-linkage
# agglomerative below 0.85, chosen on LFW View 1) -> CLUSTER_OUT=clusters.csv and sheets/cluster_NNN.png, the largest
# first (CLUSTER_FLAGS=, e.g. --largest --threshold 0.9 --method chinese-whispers)
CLUSTER_OUT ?= $(OUT)/cluster
CLUSTER_FLAGS ?=
cluster: $(CLUSTER_OUT)/summary.json ## group the faces of IMAGES=folder by person -> CLUSTER_OUT= (clusters.csv, a contact sheet per cluster)

$(call settings_file,$(CLUSTER_OUT)/.make-settings,images=$(IMAGES) embedder=$(EMBEDDER) $(RECOG_SETTINGS) \
	threshold=$(THRESHOLD) flags=$(CLUSTER_FLAGS))
$(CLUSTER_OUT)/summary.json: $(CLUSTER_OUT)/.make-settings $(wildcard $(IMAGES)) $(call embedder_files,$(EMBEDDER)) \
		$(call weights_files,$(WEIGHTS)) $(CODE_recognition.cluster) | $(VENV_STAMP)
	$(RUN) recognition.cluster --images $(call q,$(IMAGES)) --out $(call q,$(CLUSTER_OUT)) --embedder $(call q,$(EMBEDDER)) \
		$(RECOG_ARGS) $(if $(THRESHOLD),--threshold $(call q,$(THRESHOLD))) $(call qw,$(CLUSTER_FLAGS))
	$(stamp)
STAMPED += $(CLUSTER_OUT)/summary.json

# calibrate: the threshold of EMBEDDER= at FAR CALIBRATE_FAR= (CALIBRATE_FLAGS=--best-accuracy: the best accuracy) on
# all the pairs of PAIRS= (LFW's format, scored by eval-lfw, which refuses pairs of people the embedder learnt) or of
# PAIRS_CSV= under IMAGES_ROOT= (scored by eval-pairs, which names no people), into $(CALIBRATE_OUT)-scores, less the
# pairs naming a person of the LFW fold the embedder's record left out (PEOPLE= says who is in which); the calibrated
# embedder (the same tensors, the threshold and its source in its record) -> CALIBRATE_OUT=embedder.pt, which compare,
# identify and cluster then use by default (EMBEDDER=$(CALIBRATE_OUT)); never weights/ (that takes
# python -m evaluation.calibrate --overwrite-shipped, docs/pipeline.md)
CALIBRATE_PAIRS = $(or $(PAIRS_CSV),$(PAIRS))
CALIBRATE_OUT ?= $(OUT)/calibrate/$(subst /,_,$(EMBEDDER))-$(call files_name,$(CALIBRATE_PAIRS))
CALIBRATE_FAR ?= 0.01
CALIBRATE_FLAGS ?=
CALIBRATE_SCORES = $(CALIBRATE_OUT)-scores
ifneq ($(PAIRS_CSV),)
calibrate_score = $(RUN) evaluation.pairs --pairs $(call q,$(PAIRS_CSV)) --images $(call q,$(IMAGES_ROOT)) \
	--out $(call q,$(CALIBRATE_SCORES)) --embedder $(call q,$(EMBEDDER)) --aligned $(call q,$(RECOG_ALIGNED)) \
	--seed $(call q,$(SEED)) $(RECOG_ARGS) $(call qw,$(EVAL_PAIRS_FLAGS))
calibrate_score_inputs = $(PAIRS_CSV) $(wildcard $(IMAGES_ROOT)) $(CODE_evaluation.pairs)
calibrate_score_settings = csv=$(PAIRS_CSV) images=$(IMAGES_ROOT) seed=$(SEED) $(RECOG_SETTINGS) flags=$(EVAL_PAIRS_FLAGS)
else
calibrate_score = $(RUN) evaluation.lfw --images $(call q,$(LFW_IMAGES)) --pairs $(call q,$(PAIRS)) \
	--out $(call q,$(CALIBRATE_SCORES)) --embedder $(call q,$(EMBEDDER)) --aligned $(call q,$(RECOG_ALIGNED)) \
	$(RECOG_ARGS) $(call qw,$(LFW_FLAGS))
calibrate_score_inputs = $(PAIRS) $(wildcard $(LFW_IMAGES)) $(CODE_evaluation.lfw)
calibrate_score_settings = $(call lfw_settings,) $(LFW_FLAGS)
endif
.PHONY: calibrate
calibrate: $(CALIBRATE_OUT)/calibration.json ## threshold of EMBEDDER= at FAR CALIBRATE_FAR= on PAIRS= or PAIRS_CSV= -> CALIBRATE_OUT=embedder.pt

$(call settings_once,$(CALIBRATE_SCORES)/.make-settings,embedder=$(EMBEDDER) $(calibrate_score_settings))
$(CALIBRATE_SCORES)/results.json: $(CALIBRATE_SCORES)/.make-settings $(calibrate_score_inputs) \
		$(call embedder_files,$(EMBEDDER)) | $(VENV_STAMP)
	@test -z $(call q,$(PAIRS_CSV)) -o -n $(call q,$(IMAGES_ROOT)) || { echo "usage: make calibrate PAIRS_CSV=pairs.csv IMAGES_ROOT=<folder its paths start from> [EMBEDDER=shipped]" >&2; exit 2; }
	$(calibrate_score)
	$(stamp)
$(call settings_once,$(CALIBRATE_OUT)/.make-settings,embedder=$(EMBEDDER) pairs=$(CALIBRATE_PAIRS) people=$(PEOPLE) \
	far=$(CALIBRATE_FAR) flags=$(CALIBRATE_FLAGS))
$(CALIBRATE_OUT)/calibration.json: $(CALIBRATE_OUT)/.make-settings $(CALIBRATE_SCORES)/results.json $(CALIBRATE_PAIRS) \
		$(PEOPLE) $(call embedder_files,$(EMBEDDER)) $(CODE_evaluation.calibrate) | $(VENV_STAMP)
	$(RUN) evaluation.calibrate --distances $(call q,$(CALIBRATE_SCORES)/pairs.csv) --pairs $(call q,$(CALIBRATE_PAIRS)) \
		--embedder $(call q,$(EMBEDDER)) --out $(call q,$(CALIBRATE_OUT)) --people $(call q,$(PEOPLE)) \
		--far $(call q,$(CALIBRATE_FAR)) $(call qw,$(CALIBRATE_FLAGS))
	$(stamp)
STAMPED += $(CALIBRATE_SCORES)/results.json $(CALIBRATE_OUT)/calibration.json

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
# $(call var_arg,NAME,VALUE): NAME=VALUE as one shell word, for a make that a recipe runs
var_arg = $(call q,$(1)=$(2))
DEMO_VARS = $(call var_arg,WIDER,$(DEMO_WIDER)) $(call var_arg,LANDMARKS,$(DEMO_WIDER)/landmarks/trainImageList.txt) \
	$(call var_arg,OUT,$(DEMO)) $(call var_arg,GEN_FLAGS,$(DEMO_GEN_FLAGS)) $(call var_arg,TRAIN_FLAGS,$(DEMO_TRAIN_FLAGS)) \
	RESTART=1

$(DEMO_TXT): $(CODE_demo.data) | $(VENV_STAMP)
	$(RUN) demo.data --out $(call q,$(DEMO_WIDER)) --seed $(call q,$(SEED)) $(call qw,$(DEMO_DATA_FLAGS))
	$(stamp)
STAMPED += $(DEMO_TXT)

# The recognition half of the demo: 12 people, each one of skimage's LFW faces photographed 5 times
# (demo/identities.py), in 2 folds; built without fold 2's people, trained for seconds, scored on fold 2.
DEMO_PEOPLE = $(DEMO)/people
DEMO_EMBED_FLAGS ?= --epochs 3 --people 4 --per-person 2 --batches-per-epoch 10 --widths 8 8 16 16 --dim 16 --workers 0 \
	--val-fraction 0.34 --no-progress
DEMO_RECOG_VARS = $(call var_arg,LFW,$(DEMO_PEOPLE)) $(call var_arg,LFW_IMAGES,$(DEMO_PEOPLE)/images) \
	$(call var_arg,OUT,$(DEMO)) FOLD=2 $(call var_arg,EMBED_FLAGS,$(DEMO_EMBED_FLAGS)) RESTART=1
DEMO_SHOTS = $(DEMO_PEOPLE)/images/Demo_Person_01/Demo_Person_01_0001.jpg $(DEMO_PEOPLE)/images/Demo_Person_01/Demo_Person_01_0002.jpg \
	$(DEMO_PEOPLE)/images/Demo_Person_03/Demo_Person_03_0001.jpg

$(DEMO_PEOPLE)/pairs.txt: $(CODE_demo.identities) | $(VENV_STAMP)
	$(RUN) demo.identities --out $(call q,$(DEMO_PEOPLE)) --seed $(call q,$(SEED))
	$(stamp)
STAMPED += $(DEMO_PEOPLE)/pairs.txt

demo: $(DEMO_TXT) $(DEMO_PEOPLE)/pairs.txt ## every stage of both halves on tiny built-in data sets (build/demo), then the shipped weights
	$(MAKE) --no-print-directory $(DEMO_VARS) stats pnet-data train-pnet rnet-data train-rnet onet-data train-onet \
		val-data roc
	$(MAKE) --no-print-directory $(DEMO_VARS) eval-wider $(call var_arg,WEIGHTS,$(DEMO)/weights)
	@echo "the same images through the shipped weights (trained on real faces; the demo's nets saw only the toy set):"
	$(MAKE) --no-print-directory $(DEMO_VARS) eval-wider $(call var_arg,WEIGHTS,$(DEMO_DETECT_WEIGHTS)) \
		$(call var_arg,PRED,$(DEMO)/eval-shipped)
	$(MAKE) --no-print-directory $(DEMO_VARS) detect $(call var_arg,WEIGHTS,$(DEMO_DETECT_WEIGHTS)) \
		$(call var_arg,IMG,$(DEMO_WIDER)/sample/astronaut.png) $(call var_arg,DETECT_OUT,$(DEMO)/detect)
	@echo "recognition: align the toy people, train an embedder without fold 2's people, score fold 2's pairs:"
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) recog-data train-embed
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) eval-lfw $(call var_arg,EMBEDDER,$(DEMO)/train/embed-fold-2) \
		$(call var_arg,LFW_OUT,$(DEMO)/eval-lfw)
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) export-embedder $(call var_arg,EMBEDDER,$(DEMO)/train/embed-fold-2) \
		$(call var_arg,EXPORT_OUT,$(DEMO)/export)
	@echo "the same pairs through the shipped embedder (trained on LFW's people of folds 1-9, none of them these):"
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) eval-lfw EMBEDDER=shipped $(call var_arg,LFW_OUT,$(DEMO)/eval-lfw-shipped)
	$(MAKE) --no-print-directory $(DEMO_RECOG_VARS) compare EMBEDDER=shipped $(call var_arg,IMAGES,$(DEMO_SHOTS))
	@echo
	@echo "demo done (everything under "$(call q,$(DEMO))"):"
	@echo "  per-stage ROC plot       "$(call q,$(DEMO))"/roc/roc.png  (curves roc.csv, figures summary.json)"
	@echo "  training logs            "$(call q,$(DEMO))"/train/{pnet,rnet,onet}/log.csv and loss_curve.png"
	@echo "  WIDER-style evaluation   "$(call q,$(DEMO))"/eval/results.json and pr_curve.png (the demo's nets)"
	@echo "                           "$(call q,$(DEMO))"/eval-shipped/results.json and pr_curve.png (the shipped weights)"
	@echo "  shipped weights, photo   "$(call q,$(DEMO))"/detect/ (annotated image and JSON)"
	@echo "  identity build           "$(call q,$(DEMO))"/recog/fold-2/manifest.json (aligned crops in "$(call q,$(DEMO))"/recog/aligned)"
	@echo "  embedder training        "$(call q,$(DEMO))"/train/embed-fold-2/log.csv and loss_curve.png"
	@echo "  LFW-style verification   "$(call q,$(DEMO))"/eval-lfw/results.json, pairs.csv, roc.png (the demo's embedder)"
	@echo "                           "$(call q,$(DEMO))"/eval-lfw-shipped/ (the shipped embedder); ONNX in "$(call q,$(DEMO))"/export"

clean-demo: ## delete the demo's folder ($(DEMO))
	rm -rf -- $(call q,$(DEMO))

##@ Checks
# -- checks -----------------------------------------------------------------------------------
# The suite in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (its module
# fixtures built once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
$(if $(and $(filter-out auto,$(TEST_WORKERS)),$(or $(call not_digits,$(TEST_WORKERS)),$(word 2,$(TEST_WORKERS)))),$(error \
	TEST_WORKERS="$(TEST_WORKERS)" is not a number of test processes (0: this one; auto: one per core)))
TEST_ARGS = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(call q,$(TEST_WORKERS)) --dist loadfile)
test: $(VENV_STAMP) ## run the test suite (tests that need ../shared/data skip when it is absent; TEST_WORKERS=2)
	$(PY) -m pytest -q $(TEST_ARGS)

test-fast: $(VENV_STAMP) ## the tests without those marked slow
	$(PY) -m pytest -q -m "not slow" $(TEST_ARGS)

bench: $(VENV_STAMP) ## benchmarks: data stage time/RSS, LMDB read, training samples/s (nets, embedder), detector images/s, gallery search
	$(RUN) benchmarks.bench_data --wider $(call q,$(WIDER)) --landmarks $(call q,$(LANDMARKS)) --workers $(call q,$(WORKERS)) \
		$(if $(wildcard $(OUT)/pnet/manifest.json),--verify-builds $(call q,$(OUT)/pnet))
	$(RUN) benchmarks.bench_train
	$(RUN) benchmarks.bench_embed
	$(RUN) benchmarks.bench_backbone
	$(RUN) benchmarks.bench_detector --images $(call q,$(VAL_IMAGES)) $(MIN_FACE_ARG) \
		$(if $(wildcard $(ORIGINAL)/onet.pt),--weights original:$(ORIGINAL),--weights shipped) \
		$(if $(wildcard $(FACENET_PKG)/facenet_pytorch),--facenet $(FACENET_PKG))
	$(RUN) benchmarks.bench_backends --images $(call q,$(VAL_IMAGES)) $(MIN_FACE_ARG)
	$(RUN) benchmarks.bench_gallery

$(foreach v,$(PATH_VARS),$(call check_path,$(v)))

# Last, once every rule is read: the stamped targets whose inputs changed in content are redone.
$(foreach t,$(shell $(MAKE_INPUTS) check $(call qw,$(STAMPED))),$(eval $(call esc,$(t)): FORCE))
