#!/usr/bin/env bash
# Builds the Go gateway (cmd/gateway) to the path given, installing Go from Debian's golang-go
# first when `go` is missing. Used by ci.sh and by `compare --gateway go`.
set -euo pipefail
out="$(realpath -m "${1:?usage: build.sh OUTPUT}")"
if ! command -v go >/dev/null; then
    echo "installing Go (Debian golang-go)" >&2
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq golang-go >/dev/null
fi
cd "$(dirname "$0")"
# No module outside the standard library, and no network to fetch one.
export GOFLAGS=-mod=mod GOPROXY=off
go build -o "$out" ./cmd/gateway
