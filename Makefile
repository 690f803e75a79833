# `make demo` and `make test` create .venv and install the package into it when needed.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.fastadv-installed

.PHONY: demo demo-cifar test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fastadv demo

# CIFAR-10 on a CPU: configs/cifar10-cpu.toml (about 11 minutes of training on 2 cores, then 15 of evaluation).
demo-cifar: $(STAMP)
	$(VENV)/bin/fastadv demo --dataset cifar10

test: $(STAMP)
	$(PY) -m pytest -q

# Speed and memory benchmarks: tables on stdout, figures in benchmarks/results.json.
# `make bench BENCH_ARGS=--quick` for a run of a few minutes; see docs/PERFORMANCE.md.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
