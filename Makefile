# Two entry points (see README): `make demo` and `make test`. Both create/reuse the venv first.
# VENV can point elsewhere (CI keeps one in ~/.cache so it survives fresh clones).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# detectron2 is not on the package index; a wheel built for this torch (see ../shared/wheels/README.md) is
# installed when present. Its file name is part of the hash, so a new wheel reinstalls.
DET_WHEELS ?= ../shared/wheels
DEPS_HASH := $(shell (cat pyproject.toml Makefile tools/install.py; ls $(DET_WHEELS)/detectron2-*.whl 2>/dev/null) | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_HASH)

.PHONY: setup demo test test-fast lint bench clean

$(DEPS_STAMP):
	# torch/torchvision pinned to the releases available on these machines (see shared stack facts);
	# installed with uv when it can be had (several times faster than pip; tools/install.py), else pip
	$(PYTHON) tools/install.py --venv $(VENV) --wheels $(DET_WHEELS)
	rm -f $(VENV)/.deps-*
	touch $(DEPS_STAMP)

setup: $(DEPS_STAMP)
	@# cheap: (re)points the editable install at this checkout when it points elsewhere (fresh clones
	@# reuse a cached venv)
	@$(PY) -I -c "import bench, pathlib, sys; sys.exit(pathlib.Path(bench.__file__).parent.parent != pathlib.Path.cwd())" \
	  || $(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

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
