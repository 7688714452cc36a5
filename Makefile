# The two set-up commands of README.md: `make repro` (install + run the pipeline), `make test` (install + tests).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test

setup:
	@bash scripts/setup_env.sh

repro: setup
	dvc repro

test:
	@bash scripts/setup_env.sh --test
	python -m pytest
