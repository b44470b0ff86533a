#!/usr/bin/env bash
# Creates a fresh virtual environment at $1 and installs the shmbridge package into it from this
# checkout (pip fetches maturin and builds the wheel with cargo), plus any further pip packages
# given after it. The one way this repository installs the package: ci.sh and
# `compare --users-service python` both use it.
set -euo pipefail
venv="$1"
shift
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$root/transport/python" "$@"
