#!/usr/bin/env bash
# The Go package's checks against the real Rust producer: installs Go from Debian's golang-go
# when `go` is missing, builds users-service unless SHMBRIDGE_USERS_SERVICE_BIN names one, then
# go vet and go test -race. `cargo test --workspace` runs it (tests/tests/go_consumer.rs);
# runs from any directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v go >/dev/null; then
    echo "installing Go (Debian golang-go)"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq golang-go >/dev/null
fi
if [[ -z "${SHMBRIDGE_USERS_SERVICE_BIN:-}" ]]; then
    target="${CARGO_TARGET_DIR:-$root/target}"
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p shmbridge-server --bin users-service
    export SHMBRIDGE_USERS_SERVICE_BIN="$target/debug/users-service"
fi
cd "$root/transport/go"
# No module outside the standard library, and no network to fetch one.
export GOFLAGS=-mod=mod GOPROXY=off
go vet ./...
go test -race -count=1 ./...
