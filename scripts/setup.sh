#!/usr/bin/env bash
# Install everything semantic_mapping needs from this repository's own files, then run a job.
#
#   bash scripts/setup.sh demo   install, then map the embedded demo scene (outputs in demo_output/)
#   bash scripts/setup.sh test   install (library, ROS 2 build), then run the whole test suite
#   bash scripts/setup.sh        install only
#
# Works on a fresh Debian 12 / Ubuntu machine with Python >= 3.10 (root or sudo for system packages).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-}"
PY="${PYTHON:-python3}"

say() { printf '\n== %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "error: need root or sudo to install system packages: $*" >&2; exit 1; fi; }

# System packages: Open3D needs libusb and OpenMP; Debian's Python needs venv.
need=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || need+=(libusb-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libgomp.so.1' || need+=(libgomp1)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  say "installing system packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
say "installing the library into .venv"
# torch first and pinned: a range that admits a newer release would pull the CUDA stack.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"

case "$job" in
  demo)
    say "running the demo"
    exec .venv/bin/semantic-mapping demo --out demo_output ;;
  test)
    if [ -f scripts/build_ros.sh ]; then
      say "building the ROS 2 package (colcon, PyPI ROS wheels)"
      bash scripts/build_ros.sh
    fi
    say "running the test suite"
    exec .venv/bin/python -m pytest -q ;;
  "") say "installed; run .venv/bin/semantic-mapping --help" ;;
  *) echo "error: unknown job '$job' (expected demo or test)" >&2; exit 2 ;;
esac
