# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job on real data (GloVe)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned first: a bare `torch` requirement can pull a multi-GB CUDA build
TORCH  := torch==2.13.0

.PHONY: demo test setup clean

$(BIN)/irli: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[glove,test,bench]'
	touch $(BIN)/irli

setup: $(BIN)/irli

demo: setup
	$(BIN)/irli demo

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
