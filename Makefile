# softkey — the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

ARGS ?=

.PHONY: run test test-random bench e2e fuzz mutate lint demo clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "softkey needs Python >= 3.10")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "Could not create a virtualenv: install python3-venv (e.g. apt-get install python3-venv) and retry."; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

## Plug the key in (UHID); see README for UDP and the other options.
run: $(STAMP)
	$(VENV)/bin/softkey run $(ARGS)

## The default test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

## The same suite in a shuffled order (pytest-randomly): every test must stand alone.
## RANDOM_SEED=N replays an order (the run prints its seed); CI uses a fixed one.
RANDOM_SEED ?=
test-random: $(STAMP)
	$(PY) -m pytest -q -p randomly $(if $(RANDOM_SEED),--randomly-seed=$(RANDOM_SEED)) \
		--ignore=tests/packaging $(ARGS)

## Speed, side by side with floors and a reference server; prints every target met/MISSED and
## writes docs/benchmarks.md. BENCH_ARGS="--quick": a smoke run (small sizes; writes nothing).
bench: $(STAMP)
	$(PY) -m softkey.tools.dev.bench --write $(BENCH_ARGS)

## Fuzz every input (CTAP2, U2F, CTAPHID, UHID) for FUZZ_MINUTES (default 5) and report cases
## tried and failures; atheris (libFuzzer) when it installs, else hypothesis. FUZZ_ARGS="--help".
FUZZ_MINUTES ?= 5
fuzz: $(STAMP)
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install --quiet atheris 2>/dev/null || echo "atheris did not install here; fuzzing with hypothesis instead"
	$(PY) -m softkey.tools.dev.fuzz --minutes $(FUZZ_MINUTES) $(FUZZ_ARGS)

## Mutation testing (cosmic-ray) of the spec-critical modules: score and surviving mutants.
## Slow (every mutant runs its module's tests): MUTATE_ARGS="--sample 40 --minutes 10" for a
## time-boxed sample, "--modules keywrap,pin", "--help".
mutate: $(STAMP)
	@$(PY) -c 'import cosmic_ray' 2>/dev/null || $(PY) -m pip install --quiet 'cosmic-ray>=8.7'
	$(PY) -m softkey.tools.dev.mutate $(MUTATE_ARGS)

## Real kernel, real clients: softkey over UHID in a qemu VM (docs/e2e.md). E2E_ARGS="--help".
e2e: $(STAMP)
	$(PY) tools/vm/e2e.py $(E2E_ARGS)

demo: $(STAMP)
	$(VENV)/bin/softkey demo

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check .
	@# mypy sees the packages under their installed names through a tree of links.
	@mkdir -p build/typecheck/softkey && for d in authenticator transports tools; do \
		ln -sfn ../../../$$d build/typecheck/softkey/$$d; done
	cd build/typecheck && MYPYPATH=. ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
		-p softkey.authenticator -p softkey.transports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
