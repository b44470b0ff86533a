#!/usr/bin/env bash
# Builds the shmbridge wheel into a fresh virtual environment and runs the Python test suite
# against it, as a user would after `pip install ./transport/python`: the package's tests
# (transport/python/tests) and those of the Python users-service and its dataset
# (server/python/tests, beside the Rust users-service they mirror). Called by .ci/run; runs from
# any directory.
#
# The venv is made in a temporary directory and removed afterwards, unless SHMBRIDGE_PY_VENV
# names one to (re)create and keep. maturin builds the wheel in release mode into the
# workspace's target directory (CARGO_TARGET_DIR, default ROOT/target) with the workspace's
# Cargo.lock, so a second run compiles only what changed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
if [[ -n "${SHMBRIDGE_PY_VENV:-}" ]]; then
    venv="$SHMBRIDGE_PY_VENV"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    venv="$scratch/venv"
fi

started=$SECONDS
# The Rust users-service, for the tests of a Python consumer of the Rust producer.
cargo build --quiet -p shmbridge-server --bin users-service
export SHMBRIDGE_USERS_SERVICE_BIN="$CARGO_TARGET_DIR/debug/users-service"
# Flask only for the WSGI adapter's tests: the package itself depends on nothing.
bash transport/python/install.sh "$venv" pytest mypy flask
echo "wheel built and installed in $((SECONDS - started)) s"
# Run from outside the source tree, so `import shmbridge` can only find the installed package.
cd "$venv"
# The stubs editors read (shmbridge.pyi) against the module as built: names, signatures, defaults.
"$venv/bin/python" -m mypy.stubtest shmbridge \
    --allowlist "$root/transport/python/tests/stubtest-allowlist.txt"
# --rootdir: test ids name their file from the repository root (server/python/tests/...).
"$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$root" \
    "$root/transport/python/tests" "$root/server/python/tests"
echo "python build + tests took $((SECONDS - started)) s"
