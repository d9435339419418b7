# The two commands a fresh machine needs (the README's):
#   make demo    a KVM guest drives a simulated V100 behind the filter (no KVM: the same
#                sequence through the Python API)
#   make test    lint, the test suite and the C core under ASan+UBSan: what CI (.ci/run) runs
# Each installs the system tools it uses when it can (apt-get, as root) and says what it
# skipped, creates the virtual environment $(VENV) and installs the package into it (editable,
# so the tests import the source tree). The C library on its own: make -C csrc [install].
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# a change to any of these makes the package's C core stale: reinstall
BUILD_INPUTS := pyproject.toml setup.py build_cffi.py $(wildcard csrc/*.c csrc/*.h) csrc/sources.mk

.PHONY: demo test tools-demo tools-test lint pytest sanitizers clean

demo: tools-demo $(VENV)/.demo-installed
	$(VENV)/bin/mmiofilter demo

test: tools-test $(VENV)/.test-installed
	@. $(VENV)/bin/activate && bash .ci/resources
	@echo "test: lint"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@echo "test: pytest"
	$(PY) -m pytest
	@echo "test: the C core under ASan and UBSan"
	bash .ci/sanitizers

# the parts of `make test` on their own
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

pytest: $(VENV)/.test-installed
	$(PY) -m pytest

sanitizers:
	bash .ci/sanitizers

tools-demo:
	@bash .ci/system-tools cc make python-dev python-venv nasm

tools-test:
	@bash .ci/system-tools cc make python-dev python-venv pkg-config nasm clang redis-server

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.demo-installed: $(VENV)/bin/python $(BUILD_INPUTS)
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.test-installed: $(VENV)/bin/python $(BUILD_INPUTS)
	$(PY) -m pip install -q -e '.[test,dev]'
	@# atheris for the fuzz smoke: a wheel on PyPI, but the smoke skips (saying so) without it
	@$(PY) -m pip install -q -e '.[fuzz]' || echo "setup: skipped atheris: the atheris fuzz smoke skips"
	@touch $@ $(VENV)/.demo-installed

clean:
	rm -rf $(VENV) build *.egg-info mmiofilter/_core*.so mmiofilter/_core.c
	$(MAKE) -C csrc clean
