# rtcp: `make demo` and `make test` set everything up from a machine with only python3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo lint clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

# About two minutes: a table on the terminal, the figures in bench/results.json (compared with
# the previous ones there). Options: make bench BENCH_ARGS='--quick' (see rtcp bench --help).
bench: $(STAMP)
	$(VENV)/bin/rtcp bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rtcp tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
