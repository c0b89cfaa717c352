# Two targets do all the set-up: `make demo` and `make test` each create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[reference,test]'
	touch $@

demo: $(STAMP)
	$(BIN)/diffbench demo

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .diffbench
