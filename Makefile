# DNC Stack: `make demo` runs the main job, `make test` the test suite. Each does its own set-up on a
# fresh machine: virtual environment, the pinned CPU torch first (anything looser pulls a multi-GB
# CUDA build), the project with its extras, and the Fashion-MNIST Debian package when missing.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data test demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[export,serving,dev]'
	touch $@

data: $(FMNIST)

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

lint: setup
	$(PY) -m ruff check .

test: setup data lint
	$(PY) -m pytest -q

DNC  := $(VENV)/bin/dnc
DEMO := runs/demo
REPO := model_repository

# The main job on CPU, end to end (a few minutes): train a small DNC classifier on Fashion-MNIST's 5
# coarse classes, export and check it, build the Triton model repository, start a real tritonserver
# (ports 8000-8002), classify a handful of test images with their nearest-centroid evidence, swap the
# served class list to the 10 fine classes by recomputing centroids from labelled images (no
# retraining, one reload, no failed request), classify them again, and stop the server (also on
# failure). Two epochs leave the trained sub-centroids far from any one image, so the coarse model is
# not anchored; the fine set is.
demo: setup data
	$(DNC) write-folder --out $(DEMO)/data/coarse --labels coarse --per-class 4000 --test-per-class 0
	$(DNC) write-folder --out $(DEMO)/data/fine --labels fine
	$(DNC) write-folder --out $(DEMO)/data/handful --labels fine --per-class 1 --test-per-class 1
	$(DNC) train --data $(DEMO)/data/coarse --channels 1 --image-size 28 --out $(DEMO)/coarse-dnc --epochs 2 \
		--warmup-epochs 0.3 --workers 0
	$(DNC) export $(DEMO)/coarse-dnc/checkpoint.safetensors --out $(DEMO)/export
	$(DNC) eval-onnx --embed $(DEMO)/export/embed.onnx --centroids $(DEMO)/export --data $(DEMO)/data/coarse/test
	$(DNC) centroids --embed $(DEMO)/export/embed.onnx --data $(DEMO)/data/fine/train --K 4 --out $(DEMO)/fine-set
	$(DNC) eval-onnx --embed $(DEMO)/export/embed.onnx --centroids $(DEMO)/fine-set --data $(DEMO)/data/fine/test
	$(DNC) repo build $(DEMO)/export --repo $(REPO)
	trap '$(DNC) stop --repo $(REPO)' EXIT; trap 'exit 130' INT TERM; \
	$(DNC) serve --repo $(REPO) --detach && \
	$(DNC) classify $(DEMO)/data/handful/test --top-k 2 && \
	$(DNC) swap --repo $(REPO) --centroids $(DEMO)/fine-set && \
	$(DNC) classify $(DEMO)/data/handful/test --protocol grpc --top-k 2
	@echo "training curves: $(DEMO)/coarse-dnc/curves.png; export: $(DEMO)/export/manifest.json; repository: $(REPO)"

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
