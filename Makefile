# The README's first two commands, on a machine with Python 3.10+ and make:
#   make fit [ARGS="--data.data_dir /path/to/datasets"]   train the default recipe
#   make test [PYTEST_ARGS='-m "not slow"']                 run the test suite
#   make test-lowest                                        the quick suite on the lowest versions allowed (as CI)
#   make lint                                               ruff check and ruff format --check (as CI)
#   make docs                                               the guide in docs/ as a site in site/ (as CI)
# Each creates .venv and installs the project into it (pip install -e ".[dev]") when needed: the first time,
# and again whenever pyproject.toml changes; otherwise they start at once.

PYTHON ?= python3
VENV ?= .venv
# lightning, torchmetrics and jsonargparse at the lowest versions pyproject.toml allows (.ci/lowest_versions.py),
# put in front of .venv's packages, which give the rest (torch among them)
LOWEST ?= .venv-lowest
ARGS ?=
PYTEST_ARGS ?=

.PHONY: fit test test-lowest lint docs install clean-venv

fit: $(VENV)/.installed
	$(VENV)/bin/python -m mnist_lightning fit $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-lowest: $(LOWEST)/.installed
	PYTHONPATH=$(CURDIR)/$(LOWEST) $(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# --strict: a broken link or anchor, or a page missing from mkdocs.yml's nav, fails the build
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: '$(PYTHON)' was not found. Install Python 3.10 or newer, or name one: make $(MAKECMDGOALS) PYTHON=/path/to/python3" >&2; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); this project needs 3.10 or newer (make $(MAKECMDGOALS) PYTHON=python3.11, say)" >&2; \
	  exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) || { \
	  rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian or Ubuntu install the venv module: apt-get install python3-venv" >&2; \
	  exit 1; }
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

$(LOWEST)/.installed: pyproject.toml $(VENV)/.installed
	rm -rf $(LOWEST)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --target $(LOWEST) \
	  $$($(VENV)/bin/python .ci/lowest_versions.py)
	@touch $@

clean-venv:
	rm -rf $(VENV) $(LOWEST)
