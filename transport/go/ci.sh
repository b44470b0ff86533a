#!/usr/bin/env bash
# The Go package's checks against the real Rust producer: builds the Go gateway (build.sh, which
# installs Go from Debian's golang-go when `go` is missing), builds users-service unless
# SHMBRIDGE_USERS_SERVICE_BIN names one and the Python package into a virtual environment unless
# SHMBRIDGE_PYTHON names an interpreter that has it, then go vet and go test -race against both
# producers. `cargo test --workspace` runs it (tests/tests/go_consumer.rs);
# runs from any directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
bash "$root/transport/go/build.sh" "$scratch/gateway"
if [[ -z "${SHMBRIDGE_USERS_SERVICE_BIN:-}" ]]; then
    target="${CARGO_TARGET_DIR:-$root/target}"
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p shmbridge-server --bin users-service
    export SHMBRIDGE_USERS_SERVICE_BIN="$target/debug/users-service"
fi
if [[ -z "${SHMBRIDGE_PYTHON:-}" ]]; then
    # The Python producer's tests need the package: a virtual environment of this checkout's
    # wheel, rebuilt each time so it matches (transport/python/install.sh).
    venv="${CARGO_TARGET_DIR:-$root/target}/go-python-venv"
    bash "$root/transport/python/install.sh" "$venv"
    export SHMBRIDGE_PYTHON="$venv/bin/python"
fi
cd "$root/transport/go"
export GOFLAGS=-mod=mod GOPROXY=off
go vet ./...
go test -race -count=1 ./...
