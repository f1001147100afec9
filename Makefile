# Two commands: `make run` brings the whole stack up, `make test` passes the suite.
# Works on a fresh Debian/Ubuntu machine with Python 3.11+ (root or sudo for apt-get).

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := tesseract-ocr tesseract-ocr-deu tesseract-ocr-eng ghostscript pngquant unpaper poppler-utils dovecot-imapd
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install system-deps bench clean help

help:
	@echo "make run    - install everything and serve the whole stack (Ctrl-C stops it)"
	@echo "make test   - install test dependencies and run the whole suite against real servers"
	@echo "make bench  - run the case-throughput benchmark"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (apt-get install python3 python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "creating the virtualenv failed: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: system-deps $(STAMP)

run: install
	$(BIN)/aktenlauf dev

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/case_throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache
