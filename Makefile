# ftlab: `make train` and `make test` set up .venv themselves.
PY_BASE ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: install train demo test test-full lint bench tensorboard clean

install: $(STAMP)

# Re-installs only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

train: install
	$(PY) -m ftlab.train +experiment=cats_dogs_cars $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

test-full: install
	$(PY) -m pytest -q -m "" $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

tensorboard: install
	$(VENV)/bin/tensorboard --logdir logs

clean:
	rm -rf logs outputs multirun .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
