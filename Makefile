# Two entry points (see README): `make demo` and `make test`. Both create/reuse the venv first.
# VENV can point elsewhere (CI keeps one in ~/.cache so it survives fresh clones).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# detectron2 is not on the package index; a wheel built for this torch (see ../shared/wheels/README.md) is
# installed when present. Its file name is part of the hash, so a new wheel reinstalls.
DET_WHEELS ?= ../shared/wheels
DEPS_HASH := $(shell (cat pyproject.toml Makefile; ls $(DET_WHEELS)/detectron2-*.whl 2>/dev/null) | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_HASH)

.PHONY: setup demo test test-fast lint bench clean

$(DEPS_STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision pinned to the releases available on these machines (see shared stack facts)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 "setuptools<81"
	$(PY) -m pip install -q -e ".[dev]"
	for whl in $(wildcard $(DET_WHEELS)/detectron2-*.whl); do $(PY) -m pip install -q "$$whl" || exit 1; done
	rm -f $(VENV)/.deps-*
	touch $(DEPS_STAMP)

setup: $(DEPS_STAMP)
	@# cheap: (re)points the editable install at this checkout (fresh clones reuse a cached venv)
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

demo: setup
	$(VENV)/bin/bench run --recipe moco_mixup --tasks all

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

bench: setup
	$(VENV)/bin/pytest benchmarks --benchmark-enable -q -s

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
