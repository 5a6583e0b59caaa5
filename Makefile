# prodloop: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup browser lint typecheck unit integration kafka-up kafka-down bench golden dist clean

setup: $(STAMP)

# the native hot path (native/, Rust) is built where cargo exists; without it prodloop runs
# its pure-Python path and says so
$(STAMP): pyproject.toml native/Cargo.toml native/pyproject.toml $(wildcard native/src/*.rs)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "prodloop needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@if command -v cargo >/dev/null 2>&1; then \
	  echo "building the native extension (native/, cargo $$(cargo --version | cut -d' ' -f2))"; \
	  $(PY) -m pip install --quiet --force-reinstall --no-deps ./native; \
	else echo "no cargo: the native extension is not built; prodloop runs its pure-Python path"; fi
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/prodloop demo

lint: setup
	$(VENV)/bin/ruff check attribution collector tests bench scripts
	$(VENV)/bin/ruff format --check attribution collector tests bench scripts
	$(VENV)/bin/lint-imports --no-cache
	@if command -v cargo >/dev/null 2>&1; then \
	  cargo fmt --manifest-path native/Cargo.toml --check && \
	  cargo clippy --quiet --release --manifest-path native/Cargo.toml -- -D warnings; fi

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest tests/unit -q

# the report test opens the report in Debian's headless Chromium (a browser download cannot work here)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: setup browser lint typecheck
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/ingest.py

# a wheel to install elsewhere: pip install dist/prodloop-*.whl
dist: setup
	rm -rf dist
	$(PY) -m pip wheel --no-deps --quiet -w dist .
	@ls dist/prodloop-*.whl

kafka-up: setup
	$(PY) scripts/kafka_broker.py start

kafka-down:
	$(PY) scripts/kafka_broker.py stop

clean:
	rm -rf $(VENV) .prodloop .pytest_cache .mypy_cache .ruff_cache dist native/target

golden:
	cd tests/data/golden/gen && go run . -out ..
