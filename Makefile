# SmartLogs: the two commands a newcomer needs are `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# engines run as unprivileged users, so their state lives where those users can reach it
export SMARTLOGS_ENGINES_DIR ?= /var/tmp/smartlogs-engines
ENGINES_DIR = $(SMARTLOGS_ENGINES_DIR)

.PHONY: up test install bench engines-up engines-down browser shippers clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/smartlogs: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/smartlogs  ## create .venv and install SmartLogs with its test tools

up: install  ## run the embedded platform (API on http://127.0.0.1:8000, no Docker, no engines)
	$(BIN)/smartlogs up

test: install engines-up browser shippers  ## start the real engines, then run the whole test suite
	$(BIN)/python -m pytest

bench: install  ## run the embedded benchmark and append the results to bench/RESULTS.md
	$(BIN)/python bench/bench_embedded.py --lines 100000 --record bench/RESULTS.md

engines-up:  ## install and start RabbitMQ, Kafka and Elasticsearch locally (no Docker; idempotent)
	SMARTLOGS_ENGINES_DIR=$(ENGINES_DIR) scripts/engines/install.sh all
	SMARTLOGS_ENGINES_DIR=$(ENGINES_DIR) scripts/engines/start.sh all

shippers:  ## install rsyslog (+ its Elasticsearch output) and logger (Debian packages) for the receiver tests
	scripts/install-shippers.sh

browser:  ## install headless Chromium + chromedriver (Debian packages) for the console's browser test
	scripts/install-browser.sh

engines-down:  ## stop the local engines
	SMARTLOGS_ENGINES_DIR=$(ENGINES_DIR) scripts/engines/stop.sh all

clean:  ## remove the virtualenv and local data
	rm -rf $(VENV) var .pytest_cache
