# skiff's two entry points for a new machine (Debian, as root): `make demo` and `make test`.
# Each installs what it needs: Debian packages first, then a virtualenv with skiff and its tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# command -> Debian package providing it
SYSTEM_TOOLS := docker-registry:docker-registry skopeo:skopeo umoci:umoci bwrap:bubblewrap \
                htpasswd:apache2-utils debootstrap:debootstrap busybox:busybox-static zstd:zstd

.PHONY: all system-deps venv demo test lint unit clean

all: venv

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/skiff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/skiff

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

unit: system-deps venv
	$(BIN)/pytest -q

test: system-deps venv lint unit

demo: system-deps venv
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
