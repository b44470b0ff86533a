#!/usr/bin/env bash
# inline-threshold.sh [ROUNDS] [DURATION]: what travelling inline costs against a slot, across
# processes and through the whole gateway, measured with wrk (one connection, so each figure is
# a round trip: client -> gateway -> channel -> users-service -> answer -> gateway -> client).
#
# Two users-service + gateway pairs run side by side from target/release: one with
# `--inline-threshold 0` (every body in a slot), one with `--inline-threshold 65536` (every body
# up to 64 KiB inline). For each round and size the two are loaded in turn, so both see the same
# machine; the table gives the medians over rounds of wrk's p50 and req/s, and inline/slot.
# Before measuring, each pair's answer is checked byte for byte against users-service's own
# REST answer and for the tier it names in `x-transport`.
set -euo pipefail
ROUNDS=${1:-3}
DURATION=${2:-3s}
SIZES=${SIZES:-"256 1024 4096 8192 16384 32768 65536"}
BIN=${BIN:-target/release}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

# start NAME ARGS...: runs a service, waits for its "listening on" line, prints the address.
start() {
  local name=$1; shift
  "$@" --listen 127.0.0.1:0 >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    addr=$(grep -o 'listening on [0-9.:]*' "$work/$name.log" | head -1 | awk '{print $3}') || true
    [ -n "$addr" ] && { echo "$addr"; return; }
    sleep 0.1
  done
  echo "$name did not start: $(cat "$work/$name.log")" >&2; exit 1
}

declare -A gateway upstream
for mode in slot inline; do
  threshold=0; [ "$mode" = inline ] && threshold=65536
  upstream[$mode]=$(start "users-$mode" "$BIN/users-service" --inline-threshold "$threshold")
  gateway[$mode]=$(start "gateway-$mode" "$BIN/gateway" --upstream "http://${upstream[$mode]}")
done

for size in $SIZES; do
  path="/blobs?size=$size&pattern=random&seed=1"
  for mode in slot inline; do
    curl -sf -o "$work/rest" "http://${upstream[$mode]}$path"
    tier=$(curl -sf -o "$work/shm" -D - "http://${gateway[$mode]}/via-shm$path" |
      tr -d '\r' | awk 'tolower($1)=="x-transport:" {print $2}')
    cmp -s "$work/rest" "$work/shm" || { echo "$mode $size: bytes differ" >&2; exit 1; }
    [ "$tier" = "shm-$mode" ] || { echo "$mode $size: travelled as $tier" >&2; exit 1; }
  done
done

# p50 in microseconds and req/s from one wrk run.
measure() {
  wrk -t1 -c1 -d"$DURATION" --latency "$1" | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; return (v+0)*1e6 }
    $1=="50%" {p50=us($2)} $1=="Requests/sec:" {rps=$2} END {print p50, rps}'
}

for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for mode in slot inline; do
      echo "$size $mode $(measure "http://${gateway[$mode]}/via-shm/blobs?size=$size&pattern=random&seed=1")"
    done
  done
done >"$work/runs"

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "| body | slot p50 (µs) | inline p50 (µs) | inline/slot p50 | slot req/s | inline req/s |"
echo "|---:|---:|---:|---:|---:|---:|"
for size in $SIZES; do
  sp=$(awk -v s="$size" '$1==s && $2=="slot" {print $3}' "$work/runs" | median)
  ip=$(awk -v s="$size" '$1==s && $2=="inline" {print $3}' "$work/runs" | median)
  sr=$(awk -v s="$size" '$1==s && $2=="slot" {print $4}' "$work/runs" | median)
  ir=$(awk -v s="$size" '$1==s && $2=="inline" {print $4}' "$work/runs" | median)
  awk -v s="$size" -v sp="$sp" -v ip="$ip" -v sr="$sr" -v ir="$ir" \
    'BEGIN {printf "| %d | %.0f | %.0f | %.2f | %.0f | %.0f |\n", s, sp, ip, ip/sp, sr, ir}'
done
echo
echo "rounds $ROUNDS x $DURATION per size and tier; $(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg) at the end; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
