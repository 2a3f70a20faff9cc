# podssh — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The folder operator/ would shadow the standard library's `operator` for `python -m …` run
# from here; never put the current directory on sys.path.
export PYTHONSAFEPATH := 1

.PHONY: all venv lock test test-fast fuzz fuzz-wire lint cluster-up cluster-down demo demo-down image helm clean

all: test

# Exactly the versions (and files, by hash) of requirements-test.lock, then the project itself
# without resolving anything; redone when pyproject.toml or the lock changes.
$(STAMP): pyproject.toml requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-test.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The hashed locks, resolved from pyproject.toml (run after changing its dependencies; pins that
# still fit are kept, `make lock UPGRADE=1` moves every pin to the newest that fits):
#   requirements.lock       the runtime dependencies: the image installs them (Dockerfile)
#   requirements-test.lock  the same pins plus the test extra: `make venv` installs them
# The resolver, uv, runs from a venv of its own (.venv-lock), never from the locked one.
UV_VERSION ?= 0.13.9
LOCK_VENV := .venv-lock
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --custom-compile-command 'make lock' \
	--no-progress -q $(if $(UPGRADE),--upgrade)
lock:
	[ -x $(LOCK_VENV)/bin/uv ] || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml -o requirements.lock
	sed -i '1i # The runtime dependencies of pyproject.toml with their hashes, installed into the image.' \
		requirements.lock
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) pyproject.toml --extra test -c requirements.lock \
		-o requirements-test.lock
	sed -i '1i # The pins of requirements.lock plus the test extra of pyproject.toml, installed by make venv.' requirements-test.lock

lint: venv
	$(VENV)/bin/ruff check sshserver operator tests benchmarks
	$(VENV)/bin/lint-imports

# Everything: lint, fast tests, and the end-to-end tests on the real local cluster
# (brought up by the test session when it is not running yet).
test: venv
	hack/test

# The import contract and the unit tests (no cluster, no fuzzing): well under a minute.
test-fast: venv
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests/unit -q

# The fuzz harnesses of tests/fuzz at length (`make test` runs each a few hundred times):
# FUZZ_EXAMPLES inputs per harness, a count per harness printed at the end.
FUZZ_EXAMPLES ?= 20000
# Then the wire-level fuzzer (tests/fuzz/wirefuzz.py) for WIRE_SESSIONS sessions; alone: make fuzz-wire.
WIRE_SESSIONS ?= 100000
fuzz: venv
	PODSSH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q
	$(PY) tests/fuzz/wirefuzz.py --sessions $(WIRE_SESSIONS)

# The wire-level fuzzer against an in-process gateway (no cluster).
fuzz-wire: venv
	$(PY) tests/fuzz/wirefuzz.py --sessions $(WIRE_SESSIONS)

cluster-up:
	hack/cluster up

# The gateway image from the Dockerfile: docker when a Docker engine answers, else buildah.
# IMAGE names it (default podssh:<version of pyproject.toml>, the name manifests/ and the Helm
# chart deploy by default); BASE overrides the base image (pin a registry base by digest).
VERSION := $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE ?= podssh:$(VERSION)
image:
	PODSSH_IMAGE=$(IMAGE) $(if $(BASE),BASE=$(BASE)) hack/build-image

# The helm CLI, built once from its Go module into ~/.cache/podssh/helm/ (prints its path).
helm:
	hack/lib/build-helm.sh

cluster-down:
	hack/cluster down

# The product on the local cluster, ending with the ssh command that works.
demo: venv
	hack/demo up

demo-down:
	hack/demo down

clean:
	rm -rf $(VENV) $(LOCK_VENV) *.egg-info .pytest_cache .ruff_cache
