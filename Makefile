# rtcp: `make demo` and `make test` set everything up from a machine with only python3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo lint clean bench readme-check fuzz soak

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Python's bytecode cache is on for the suite even where PYTHONDONTWRITEBYTECODE is set (container
# images, CI): the suite starts hundreds of `rtcp` processes, and without the cache each compiles
# every module it imports again (about 0.1 s of CPU per process), and pytest rewrites every test
# module again. The caches are __pycache__ folders, which git ignores.
BYTECODE_CACHE_ON := PYTHONDONTWRITEBYTECODE=

test: $(STAMP)
	$(BYTECODE_CACHE_ON) $(PY) -m pytest

# The suite as on machines whose monotonic clock reads 300 s and 40,000 s (float seconds round
# differently there: nothing may depend on the clock's absolute value). tests/conftest.py.
.PHONY: test-clocks
test-clocks: $(STAMP)
	$(BYTECODE_CACHE_ON) RTCP_TEST_CLOCK_READS_S=300 $(PY) -m pytest
	$(BYTECODE_CACHE_ON) RTCP_TEST_CLOCK_READS_S=40000 $(PY) -m pytest

# The demo also draws a plot (rtcp plot): matplotlib, the plot extra, installed for it alone so
# that `make test` never needs it. Offline, the demo runs without the plot.
PLOT_STAMP := $(VENV)/.installed-plot

$(PLOT_STAMP): $(STAMP)
	@if $(PY) -m pip install -q -e '.[dev,plot]'; then touch $(PLOT_STAMP); \
	else echo "make demo: could not install matplotlib (the plot extra): no plot" >&2; fi

demo: $(STAMP) $(PLOT_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

# About two minutes: a table on the terminal, the figures in bench/results.json (compared with
# the previous ones there). Options: make bench BENCH_ARGS='--quick' (see rtcp bench --help).
bench: $(STAMP)
	$(VENV)/bin/rtcp bench $(BENCH_ARGS)

# Every shell block of the README, run as pasted in a private network namespace, compared with
# what the README shows (numbers aside). `make test` runs it too (tests/readme).
readme-check: $(STAMP)
	$(PY) -m tests.readme.checker README.md

lint: $(STAMP)
	$(VENV)/bin/ruff check rtcp tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The Wireshark dissector (contrib/wireshark/rtcp.lua) through tshark: installs tshark when it is
# missing (Debian's package, non-interactively: no setuid capture helper), then runs the tshark
# tests. `make test` runs them only where tshark already exists.
.PHONY: wireshark-check
wireshark-check: $(STAMP)
	@command -v tshark >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" \
	    | $$SUDO debconf-set-selections 2>/dev/null; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y tshark \
	  || { $$SUDO apt-get update && \
	       $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y tshark; }; }
	@command -v tshark >/dev/null 2>&1 || { echo "wireshark-check: tshark is not installed" >&2; exit 1; }
	$(PY) -m pytest tests/trace -k tshark -rs

# Hostile peers (README: Security and limits), outside `make test`. `make fuzz MINUTES=N` runs
# the connection state machine, the connection and the codec fuzzers again and again (new
# random inputs each round) for N minutes; `make soak` runs 1,000 sequential and 50 concurrent
# transfers through an impaired proxy during a SYN flood, then checks that the receiver's fds,
# threads, RSS and temporaries return to their baseline.
MINUTES ?= 10
fuzz: $(STAMP)
	@end=$$(( $$(date +%s) + 60 * $(MINUTES) )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
	  round=$$((round + 1)); echo "make fuzz: round $$round"; \
	  RTCP_FUZZ_EXAMPLES=500 $(PY) -m pytest -x -q -p no:cacheprovider \
	    tests/hostile/test_connection_machine.py tests/core/test_connection_fuzz.py \
	    tests/core/test_wire.py || exit 1; \
	done

soak: $(STAMP)
	$(PY) -m tests.hostile.soak
