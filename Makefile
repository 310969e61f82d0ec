# Ferryman — the two commands: `make demo` and `make test`.
# Only Python 3.11+ and the distribution's package manager are assumed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARE  ?= /usr/share/doc
BENCH_ARGS ?=

.PHONY: demo test screenshots lint typecheck bench bench-small bench-cluster venv clean lock

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@scripts/bootstrap-venv "$(PYTHON)" "$(VENV)"
	@touch $@

## demo: a real backup and verified restore of SHARE through server -> proxy -> repository
demo: venv
	@SHARE="$(SHARE)" VENV="$(VENV)" scripts/demo

## test: the whole test suite, on 3 worker processes (PYTEST_WORKERS= runs it in one)
# loadfile: a file's tests share one worker (module fixtures start once; the deployment
# tests' system account and folder are never used by two workers at once)
PYTEST_WORKERS ?= -n 3 --dist loadfile --no-loadscope-reorder
test: venv
	@$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

## screenshots: the web console end-to-end tests, saving each view to docs/screenshots/
screenshots: venv
	@FERRYMAN_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/web -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

## bench: reference workload (~2 GB) against restic and borg; bench-small: ~200 MB
bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

bench-small: venv
	$(PY) -m bench.run --small $(BENCH_ARGS)

## bench-cluster: only scale-out (root: namespaces, tc) and dispatcher; add BENCH_ARGS=--small
bench-cluster: venv
	$(PY) -m bench.run --only cluster $(BENCH_ARGS)

## lock: refresh constraints.txt from the current virtual environment
lock: venv
	$(PY) -m pip freeze --exclude-editable --exclude ferryman | sort > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
