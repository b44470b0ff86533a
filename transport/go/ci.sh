#!/usr/bin/env bash
# The Go package's checks against the real Rust producer: builds the Go gateway (build.sh, which
# installs Go from Debian's golang-go when `go` is missing), builds users-service unless
# SHMBRIDGE_USERS_SERVICE_BIN names one, then go vet and go test -race. `cargo test --workspace` runs it (tests/tests/go_consumer.rs);
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
cd "$root/transport/go"
export GOFLAGS=-mod=mod GOPROXY=off
go vet ./...
go test -race -count=1 ./...
