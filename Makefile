# DNC Stack: `make demo` runs the main job, `make test` the test suite. Each does its own set-up on a
# fresh machine: virtual environment, the pinned CPU torch first (anything looser pulls a multi-GB
# CUDA build), the project with its extras, and the Fashion-MNIST Debian package when missing.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
OPENCV  := /usr/share/doc/opencv-doc/examples/data/tree.avi
HAPROXY := /usr/sbin/haproxy
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data test demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,export,serving,client,dev]'  # (not gpu: CUDA machines only)
	touch $@

data: $(FMNIST)

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

# real videos for the tests (Cinepak, MPEG-4, H.264, variable rate): Debian's opencv-doc
$(OPENCV):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq opencv-doc

# the load balancer of a fleet (`dnc serve --replicas N`): Debian's HAProxy
$(HAPROXY):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq haproxy

lint: setup
	$(PY) -m ruff check .

test: setup data $(OPENCV) $(HAPROXY) lint
	$(PY) -m pytest -q

DNC  := $(VENV)/bin/dnc
DEMO := runs/demo
# the Triton model repository the demo builds and serves (beside its exports, not in the checkout)
REPO := $(DEMO)/repository

# The main job on CPU, end to end (9 min 55 s on 2 cores from a fresh clone, set-up included): train a small DNC classifier on Fashion-MNIST's 5
# coarse classes, export and check it, build the Triton model repository, recompute a 10-class list from
# labelled images; then train a small segmenter on FashionScenes (Fashion-MNIST items over real textures)
# started from the classifier's backbone, export it and add it to the same repository beside the
# classifier. Start one real tritonserver (ports 8000-8002) serving both; classify a handful of test
# images with their nearest-centroid evidence, swap the classifier's list to the 10 fine classes (no
# retraining, one reload, no failed request) and classify again; classify pictures no model saw (a
# photograph crop, digits, noise: "unknown" where no class's threshold accepts them, with the nearest
# class as evidence), swap to the fine list with a digit class added from 20 scans and classify digits
# again; segment a few scenes (labels, overlays,
# evidence files); segment a generated clip (mask and overlay videos, evidence per frame, mIoU against its
# truth), then a second one during which the segmenter's list is swapped to the fine classes (no frame
# lost); segment the scenes again with the fine list; stop the server (also on failure). Two epochs leave
# the classifier's sub-centroids far from any one image, so the coarse model is not anchored; the
# recomputed sets are.
SEGFLAGS := --batch-size 16 --optimizer adamw --lr 0.002 --weight-decay 0.0001 --warmup-epochs 0.3 --workers 0

# Each stage ends by touching a stamp in $(DEMO)/.done/, so a rerun after a failure (or a second run) starts
# where the first one stopped; `rm -rf $(DEMO)` (or `make clean`) starts over.
DONE := $(DEMO)/.done

$(DONE)/folders: | setup data
	$(DNC) write-folder --out $(DEMO)/data/coarse --labels coarse --per-class 4000 --test-per-class 0
	$(DNC) write-folder --out $(DEMO)/data/fine --labels fine --per-class 1000 --test-per-class 500
	$(DNC) write-folder --out $(DEMO)/data/handful --labels fine --per-class 1 --test-per-class 1
	mkdir -p $(DONE) && touch $@

$(DONE)/classifier: $(DONE)/folders
	$(DNC) train --data $(DEMO)/data/coarse --channels 1 --image-size 28 --out $(DEMO)/coarse-dnc --epochs 2 \
		--warmup-epochs 0.3 --workers 0
	$(DNC) export $(DEMO)/coarse-dnc/checkpoint.safetensors --out $(DEMO)/export
	$(DNC) eval-onnx --embed $(DEMO)/export/embed.onnx --centroids $(DEMO)/export --data $(DEMO)/data/coarse/test
	$(DNC) centroids --embed $(DEMO)/export/embed.onnx --data $(DEMO)/data/fine/train --K 4 --out $(DEMO)/fine-set
	$(DNC) eval-onnx --embed $(DEMO)/export/embed.onnx --centroids $(DEMO)/fine-set --data $(DEMO)/data/fine/test
	touch $@

$(DONE)/scenes: | setup data
	rm -rf $(DEMO)/data/scenes-coarse $(DEMO)/data/scenes-fine $(DEMO)/data/clips  # written whole again
	$(DNC) write-scenes --out $(DEMO)/data/scenes-coarse --labels coarse --train 4000 --test 100
	$(DNC) write-scenes --out $(DEMO)/data/scenes-fine --labels fine --train 500 --test 6 --seed 1
	$(DNC) write-scenes --out $(DEMO)/data/clips --labels coarse --video 2 --frames 192 --fps 24 --seed 2
	mkdir -p $(DONE) && touch $@

$(DONE)/segmenter: $(DONE)/classifier $(DONE)/scenes
	$(DNC) train --data $(DEMO)/data/scenes-coarse --init $(DEMO)/coarse-dnc/checkpoint.safetensors \
		--out $(DEMO)/seg-dnc --epochs 3 $(SEGFLAGS)
	$(DNC) export $(DEMO)/seg-dnc/checkpoint.safetensors --out $(DEMO)/seg-export
	$(DNC) centroids --embed $(DEMO)/seg-export/embed.onnx --data $(DEMO)/data/scenes-fine --K 4 \
		--out $(DEMO)/seg-fine-set
	touch $@

# The open world: pictures no model saw (photo crops, digits, noise; dnc write-unknowns, from real data),
# and the fine list with a class added from 20 digit scans (dnc centroids --from --add: the other classes
# untouched, thresholds calibrated on held-out images of each class).
$(DONE)/open-world: $(DONE)/classifier
	rm -rf $(DEMO)/data/unknowns
	$(DNC) write-unknowns --out $(DEMO)/data/unknowns/train --kinds digits --count 20 --split train
	$(DNC) write-unknowns --out $(DEMO)/data/unknowns/test --count 4 --split test
	$(DNC) centroids --embed $(DEMO)/export/embed.onnx --from $(DEMO)/fine-set \
		--add digit=$(DEMO)/data/unknowns/train/digits --out $(DEMO)/fine-digit-set
	touch $@

# Serving runs every time: build the repository afresh (coarse lists), serve, classify, swap, segment.
demo: $(DONE)/segmenter $(DONE)/open-world
	rm -rf $(DEMO)/videos $(DEMO)/segmented
	$(DNC) repo build $(DEMO)/export --repo $(REPO)
	$(DNC) repo build $(DEMO)/seg-export --repo $(REPO) --name scenes
	trap '$(DNC) stop --repo $(REPO)' EXIT; trap 'exit 130' INT TERM; \
	$(DNC) serve --repo $(REPO) --detach && \
	$(DNC) classify $(DEMO)/data/handful/test --top-k 2 && \
	$(DNC) swap --repo $(REPO) --model dnc --centroids $(DEMO)/fine-set && \
	$(DNC) classify $(DEMO)/data/handful/test --protocol grpc --top-k 2 && \
	$(DNC) classify $(DEMO)/data/unknowns/test --top-k 2 && \
	$(DNC) swap --repo $(REPO) --model dnc --centroids $(DEMO)/fine-digit-set && \
	$(DNC) classify $(DEMO)/data/unknowns/test/digits $(DEMO)/data/handful/test/Bag --top-k 2 && \
	$(DNC) segment $(DEMO)/data/scenes-fine/images/test --model scenes --out $(DEMO)/segmented/coarse && \
	$(DNC) segment $(DEMO)/data/clips/videos/clip000.mp4 --model scenes --out $(DEMO)/videos \
		--truth $(DEMO)/data/clips && \
	{ $(DNC) segment $(DEMO)/data/clips/videos/clip001.mp4 --model scenes --protocol grpc --out $(DEMO)/videos & \
	  job=$$!; while kill -0 $$job 2>/dev/null && \
	    [ "$$(cat $(DEMO)/videos/.clip001.evidence.jsonl.*.dnc-tmp 2>/dev/null | wc -l)" -lt 64 ]; do sleep 0.2; done; \
	  $(DNC) swap --repo $(REPO) --model scenes --centroids $(DEMO)/seg-fine-set && wait $$job; } && \
	$(DNC) segment $(DEMO)/data/scenes-fine/images/test --model scenes --protocol grpc --out $(DEMO)/segmented/fine
	@echo "training curves: $(DEMO)/coarse-dnc/curves.png, $(DEMO)/seg-dnc/curves.png; exports: $(DEMO)/export, \
	$(DEMO)/seg-export; repository: $(REPO); segmentations (labels, overlays, evidence): $(DEMO)/segmented/; \
	videos (masks, overlays, evidence per frame; the segmenter's list swapped during clip001): $(DEMO)/videos/; \
	a second make demo reuses the trained models (rm -rf $(DEMO) to train again)"

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
