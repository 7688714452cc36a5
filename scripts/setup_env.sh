#!/usr/bin/env bash
# Installs what the pipeline needs, idempotently: system tools, .venv, torch, the pinned requirements, damc_core.
# `--test` also installs the headless browser the test suite uses (make test).
# A second run with unchanged requirement files returns at once and installs nothing.
set -euo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$SCRIPT")/.."

VENV=.venv
BASE_PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
SYSTEM_TOOLS=(ffmpeg ffprobe espeak-ng sox)
SYSTEM_PACKAGES=(ffmpeg espeak-ng sox)
TEST_BROWSER=chromium  # the results gallery is tested in a real headless browser (make test only)

install_system_tools() {
  local missing=()
  for tool in "${SYSTEM_TOOLS[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${SYSTEM_PACKAGES[*]} with apt-get (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${SYSTEM_PACKAGES[@]}" >/dev/null
  else
    echo "setup: missing system tools: ${missing[*]}" >&2
    echo "setup: install them first, e.g. 'sudo apt-get install ${SYSTEM_PACKAGES[*]}', then run make again" >&2
    exit 1
  fi
}

install_test_browser() {
  command -v "$TEST_BROWSER" >/dev/null && return
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing $TEST_BROWSER with apt-get (headless browser test of the gallery)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$TEST_BROWSER" >/dev/null
  else
    echo "setup: '$TEST_BROWSER' is not installed: the gallery's browser test will be skipped" >&2
  fi
}

requirements_stamp() {
  cat requirements.txt requirements-nodeps.txt pyproject.toml "$SCRIPT" | sha256sum | cut -d' ' -f1
}

has_cuda_torch() {
  "$1" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null
}

create_venv() {
  [ -x "$VENV/bin/python" ] && return
  if has_cuda_torch "$BASE_PYTHON"; then
    echo "setup: $BASE_PYTHON has a CUDA build of torch; .venv will use it (--system-site-packages)"
    "$BASE_PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$BASE_PYTHON" -m venv "$VENV"
  fi
}

install_python_packages() {
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  if ! "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)'; then
    echo "setup: installing torch $TORCH_VERSION (CPU) first, so no requirement can pull a CUDA build"
    "${pip[@]}" "torch==$TORCH_VERSION"
  fi
  local constraints="$VENV/torch-constraint.txt"
  "$VENV/bin/python" -c 'from importlib.metadata import version; print("torch==" + version("torch").split("+")[0])' \
    >"$constraints"
  echo "setup: installing requirements.txt (keeping $(cat "$constraints"))"
  "${pip[@]}" -r requirements.txt -c "$constraints"
  "${pip[@]}" --no-deps -r requirements-nodeps.txt
  "${pip[@]}" --no-deps -e .
}

install_system_tools
[ "${1:-}" = "--test" ] && install_test_browser
stamp_file="$VENV/.setup-stamp"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$(requirements_stamp)" ]; then
  exit 0
fi
create_venv
install_python_packages
requirements_stamp >"$stamp_file"
echo "setup: done ($(du -sh "$VENV" | cut -f1) in $VENV)"
