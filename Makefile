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

# Until the serving layer lands, the demo trains and evaluates a small DNC classifier on
# Fashion-MNIST (a few minutes on 2 CPU cores), then anchors its sub-centroids to real images.
demo: setup data
	$(VENV)/bin/dnc train --data fashion-mnist --out runs/demo --epochs 2 --train-limit 20000 \
		--warmup-epochs 0.3 --workers 0 --anchor
	$(VENV)/bin/dnc eval --checkpoint runs/demo/checkpoint.safetensors --data fashion-mnist
	@echo "plot of the run: runs/demo/curves.png"

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
