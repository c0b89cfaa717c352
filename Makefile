# Two targets do all the set-up: `make demo` and `make test` each create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Where `make lock` resolves from, besides PyPI (this CI machine: its on-disk indexes and wheels).
LOCK_SOURCES ?= $(foreach index,$(wildcard /opt/pypi/simple /opt/pypi-more/simple),--extra-index-url file://$(index)) \
	$(if $(wildcard /opt/wheels),--find-links /opt/wheels) --index-strategy unsafe-best-match

.PHONY: demo test clean lock

# Every package pinned by requirements.lock, as constraints: what is installed is still what
# pyproject.toml asks for, and torch (left out of the lock) is the CPU or CUDA build of its pinned release.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[reference,test]'
	touch $@

# Its own uv, not the locked environment's: a lock that no longer installs can still be remade.
lock:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements.lock uv
	$(BIN)/uv pip compile pyproject.toml --extra reference --extra test --universal --python-version 3.11 \
		--no-emit-package torch --no-header --quiet $(LOCK_SOURCES) -o requirements.lock

demo: $(STAMP)
	$(BIN)/diffbench demo

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .diffbench
