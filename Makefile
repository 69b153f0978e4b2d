# Two commands do all the set-up:  `make demo`  and  `make test`.
# Both create (or reuse) a virtualenv and install torch *before* the package, pinned, so pip
# never pulls a second torch. A CUDA user chooses another build, e.g.
#   make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.layerwise-installed

.PHONY: install demo test test-slow bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	$(VENV)/bin/python scripts/check_torch.py "$(TORCH_SPEC)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/layerwise demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

clean-venv:
	rm -rf $(VENV)
