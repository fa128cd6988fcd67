# Two commands on a fresh machine:  `make demo`  (fine-tune + benchmark)  and  `make test`.
# Both create .venv on first use: torch 2.13.0 (CPU wheel) first, then tokenskim and its test extras.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/tokenskim demo --output-dir runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest

.PHONY: install demo test
