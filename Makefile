# Two commands a fresh clone needs (see README.md):
#   make demo   set everything up, then run the gateway on 127.0.0.1:8080 with the demo model
#   make test   set everything up, then run lint, types and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS_DIR ?= models
PYTEST_ARGS ?=

.PHONY: setup system-deps llama-server demo-model demo test lint unit bench bench-quick clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

llama-server:
	./build_llamacpp.sh

demo-model: setup
	$(BIN)/llama-supervisor demo-model --models-dir $(MODELS_DIR)

demo: setup llama-server demo-model
	$(BIN)/llama-supervisor serve --models-dir $(MODELS_DIR)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/unit

# Debian/Ubuntu packages the tests use: nginx, systemd for systemd-analyze, shellcheck for the
# shell scripts, and chromium for the console's browser tests (Playwright drives it: its own
# browser download cannot work here).
# Installed with apt-get when missing and running as root; otherwise only named.
system-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		missing="$$missing postgresql"; \
	[ "$$(uname -s)" != Linux ] || command -v systemd-analyze >/dev/null 2>&1 || \
		missing="$$missing systemd"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "apt-get install$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $$missing || \
		{ apt-get update && apt-get install -y --no-install-recommends $$missing; }; \
	else \
		echo "missing:$$missing (install as root, or the deploy tests will fail)" >&2; \
	fi

# Integration tests need the real binary and model: fail rather than skip when missing.
test: setup system-deps lint llama-server
	LLAMA_SUPERVISOR_REQUIRE_INTEGRATION=1 $(BIN)/pytest -q -rs $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests selected"; exit 0; fi; exit $$rc

# Benchmarks (issues 6, 17 and 20, docs/benchmarks.md): the gateway against a direct
# llama-server, llama-server's router mode and nginx, then several models on one machine against
# llama-servers started by hand, then a peer hop and a model split over an RPC worker. The full
# run takes about 35 minutes on two cores.
bench: setup llama-server
	$(BIN)/python -m bench --out docs/benchmarks.md --json bench/results/latest.json

bench-quick: setup llama-server
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
