# ftlab: `make train` and `make test` set up .venv themselves; `make docs` serves the documentation site.
PY_BASE ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: install fashion-mnist browser train demo test test-full lint bench tensorboard docs clean

install: $(STAMP) fashion-mnist browser

# Re-installs only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian's Fashion-MNIST files, for `make demo` with no network: installed where we are root with apt-get;
# elsewhere a note (data=fashion_mnist then downloads the data set with torchvision).
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
APT_GET       := DEBIAN_FRONTEND=noninteractive apt-get -y -q
fashion-mnist:
	@test -f $(FASHION_MNIST) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    $(APT_GET) install dataset-fashion-mnist >/dev/null 2>&1 \
	    || { $(APT_GET) update >/dev/null 2>&1 && $(APT_GET) install dataset-fashion-mnist >/dev/null 2>&1; } \
	    || echo "note: apt-get could not install dataset-fashion-mnist; data=fashion_mnist will download"; \
	  else \
	    echo "note: dataset-fashion-mnist not installed (needs root: sudo apt-get install dataset-fashion-mnist)"; \
	  fi; }

# Debian's Chromium and its driver, for the page test of ftlab.serve (tests/serve/test_page.py): installed
# where we are root with apt-get; elsewhere a note (the test then skips, saying why).
browser:
	@command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    $(APT_GET) install chromium chromium-driver >/dev/null 2>&1 \
	    || { $(APT_GET) update >/dev/null 2>&1 && $(APT_GET) install chromium chromium-driver >/dev/null 2>&1; } \
	    || echo "note: apt-get could not install chromium chromium-driver; the page test will skip"; \
	  else \
	    echo "note: chromium-driver not installed (needs root: sudo apt-get install chromium chromium-driver)"; \
	  fi; }

train: install
	$(PY) -m ftlab.train +experiment=cats_dogs_cars $(ARGS)

demo: install
	$(PY) -m ftlab.train +experiment=offline_demo $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

test-full: install
	$(PY) -m pytest -q -m "" $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

# Throughput vs a hand-written loop, feature cache (end to end and per epoch), preprocessing; `make bench
# ARGS=--quick` for about a minute on CPU, `ARGS=--main-job` adds the real main job vs the whole-network schedule.
bench: install
	$(PY) -m ftlab.bench --json bench.json $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir logs

# The documentation site (docs/, mkdocs.yml) at http://127.0.0.1:8000, rebuilt on every change.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

clean:
	rm -rf logs outputs multirun .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
