#!/usr/bin/env bash
# The bounded-memory check of issue 21, from outside with curl: N clients at once ask one
# gateway route for the same large users body (each its own seed, so nothing is shared), every
# 200's body is checked against its x-payload-crc32 by Python's zlib (not our code), and the
# gateway's peak RSS (VmHWM) is read from /proc. One fresh gateway per route, so each peak is
# that route's alone; users-service is shared.
#
# 0.2 s into each burst one small request (10 users) is timed beside it. Goodput is verified
# bodies per second of the burst's wall time. After each route: the CPU seconds each service
# spent during the burst, and their refusal and wait counters from /metrics.
#
# Usage: bash docs/memory-burst.sh [COUNT] [CLIENTS] [ROUTE...]
#   COUNT    users per body (default 200000: ~73 MB)
#   CLIENTS  concurrent requests (default 64)
#   ROUTE    gateway paths (default: the cached, REST and shared-memory users routes)
# REQUESTS=N sends N requests, CLIENTS at a time (default: CLIENTS, all at once); e.g.
# REQUESTS=64 with CLIENTS=4 is the 4-at-a-time baseline. RETRIES=N lets each client retry a
# 503 (curl's --retry, which honours Retry-After), so every request is eventually served and
# goodput compares with the baseline's. Extra flags for each service in
# GATEWAY_FLAGS and USERS_FLAGS (e.g. GATEWAY_FLAGS="--memory-budget 536870912").
# ONE_CURL=1 sends the burst from one curl process (`--parallel`, a connection per request)
# instead of a bash and a curl process per request, and checks the bodies after the burst: on
# two cores, starting 64 client processes at once takes the CPU the services need, and a
# client's own start-up counts in its time; with one process the times are the services'.
# TIMELINE=1 also samples users-service's /metrics every 0.1 s during each burst and prints,
# per quarter second, the bytes of bodies being made (its --making-budget's reservations) and
# the requests it refused and let wait: when the cores idle and why.
set -euo pipefail

count=${1:-200000}
clients=${2:-64}
requests=${REQUESTS:-$clients}
shift $(( $# > 2 ? 2 : $# ))
routes=("$@")
if [ ${#routes[@]} -eq 0 ]; then
    routes=(/api/users-cached /api/users-via-api /api/users-via-shm)
fi

cd "$(dirname "$0")/.."
cargo build --release --quiet -p shmbridge-server --bins
work=$(mktemp -d)
# `start` runs in a command substitution (a subshell), so each service's pid is known only from
# the file it writes there.
cleanup() {
    for file in "$work"/*.pid; do
        [ -e "$file" ] && kill "$(cat "$file")" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Starts a service in the background; prints its address once it has announced it.
start() {
    local name=$1
    shift
    "target/release/$name" --listen 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.err" &
    echo $! >"$work/$name.pid"
    for _ in $(seq 100); do
        if grep -q '^listening on ' "$work/$name.out"; then
            sed -n 's/^listening on //p' "$work/$name.out" | head -1
            return
        fi
        sleep 0.1
    done
    echo "$name did not start: $(cat "$work/$name.err")" >&2
    exit 1
}

# One request: "STATUS VERDICT SECONDS", the verdict `verified` or `CORRUPT` for a 200 (its
# body against its x-payload-crc32, by Python's zlib), otherwise the error's code. With
# RETRIES=N, curl retries a 503 up to N times, waiting as its Retry-After says.
one() {
    local url=$1 index=$2
    local body="$work/b.$index" headers="$work/h.$index"
    local status seconds code claimed
    read -r status seconds < <(curl -s --max-time 300 --retry "${RETRIES:-0}" -D "$headers" \
        -o "$body" -w '%{http_code} %{time_total}' "$url")
    if [ "$status" = 200 ]; then
        claimed=$(tr -d '\r' <"$headers" | sed -n 's/^x-payload-crc32: //Ip' | tail -1)
        code=$(python3 -c 'import sys, zlib
print(format(zlib.crc32(open(sys.argv[1], "rb").read()), "08x"))' "$body")
        if [ "$code" = "$claimed" ]; then code=verified; else code=CORRUPT; fi
    else
        code=$(sed -n 's/.*"code":"\([a-z_]*\)".*/\1/p' "$body")
    fi
    rm -f "$body" "$headers"
    echo "$status ${code:-?} $seconds"
}
export -f one
export work RETRIES

# The burst from one curl process: `burst BASE_URL` sends it; `verdicts` then prints one
# "STATUS VERDICT SECONDS" line per request, as `one` does.
burst() {
    local base=$1 index
    for index in $(seq "$requests"); do
        printf 'url = "%s&seed=%d"\noutput = "%s/b.%d"\n' "$base" "$index" "$work" "$index"
    done >"$work/burst.config"
    curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$clients" --max-time 300 \
        --retry "${RETRIES:-0}" --config "$work/burst.config" \
        -w '%{http_code}|%{time_total}|%header{x-payload-crc32}|%{filename_effective}\n' \
        >"$work/burst.raw" || true
}
verdicts() {
    python3 - "$work/burst.raw" <<'PYTHON'
import json, os, sys, zlib
for line in open(sys.argv[1]):
    status, seconds, claimed, path = line.rstrip("\n").split("|", 3)
    body = open(path, "rb").read() if os.path.exists(path) else b""
    if status == "200":
        verdict = "verified" if format(zlib.crc32(body), "08x") == claimed else "CORRUPT"
    else:
        try:
            verdict = json.loads(body)["code"]
        except (ValueError, KeyError, TypeError):
            verdict = "?"
    if os.path.exists(path):
        os.remove(path)
    print(status, verdict, seconds)
PYTHON
}

# `sample_making ADDRESS STARTED`: every 0.1 s until killed, "SECONDS MAKING_BYTES REFUSED
# WAITED" from users-service's /metrics (its making budget's reservations, and its refusals and
# waits so far).
sample_making() {
    while true; do
        curl -s "http://$1/metrics" | awk -v t="$(echo "$(date +%s.%N) - $2" | bc)" '
            /^budget_reserved_bytes\{budget="making"\}/ { making = $2 }
            /^budget_refusals_total\{budget="making"\}/ { refused = $2 }
            /^budget_waits_total\{budget="making"\}/ { waited = $2 }
            END { printf "%.2f %d %d %d\n", t, making, refused, waited }'
        sleep 0.1
    done
}
# Reads sample_making's lines; prints per quarter second the least and most MiB being made and
# the refusals and waits in it.
print_timeline() {
    awk 'NR == 1 { refused0 = $3; waited0 = $4 }
        { q = int($1 * 4); mib = $2 / 1048576
          if (!(q in lo) || mib < lo[q]) lo[q] = mib; if (mib > hi[q]) hi[q] = mib
          refused[q] = $3 - refused0; waited[q] = $4 - waited0; if (q > last) last = q }
        END { print "    timeline (s: MiB being made, least-most; refused, waited so far)"
              for (q = 0; q <= last; q++) if (q in lo)
                  printf "    %5.2f: %4.0f-%-4.0f %4d %4d\n", q / 4, lo[q], hi[q], refused[q], waited[q] }'
}

users=$(start users-service ${USERS_FLAGS:-})
users_pid=$(cat "$work/users-service.pid")
echo "users-service on $users; $requests requests, $clients at a time, of $count users each"
printf '%-22s %8s %13s %8s %6s %12s %9s %13s %12s %10s\n' route verified gateway_busy corrupt other \
    "peak RSS" "wall (s)" "goodput (/s)" "max 503 (s)" "small (s)"
for route in "${routes[@]}"; do
    gateway=$(start gateway --upstream "http://$users" ${GATEWAY_FLAGS:-})
    gateway_pid=$(cat "$work/gateway.pid")
    users_cpu=$(cpu_seconds "$users_pid")
    started=$(date +%s.%N)
    (sleep 0.2 && curl -s -o /dev/null -w '%{http_code} %{time_total}' \
        "http://$gateway$route?count=10" >"$work/small") &
    small=$!
    if [ -n "${TIMELINE:-}" ]; then
        sample_making "$users" "$started" >"$work/timeline" &
        echo $! >"$work/timeline.pid"
    fi
    if [ -n "${ONE_CURL:-}" ]; then
        burst "http://$gateway$route?count=$count"
    else
        seq "$requests" | xargs -P "$clients" -I{} bash -c \
            "one 'http://$gateway$route?count=$count&seed={}' {}" >"$work/results"
    fi
    ended=$(date +%s.%N)
    if [ -n "${TIMELINE:-}" ]; then
        kill "$(cat "$work/timeline.pid")" && rm "$work/timeline.pid"
    fi
    users_cpu=$(echo "$(cpu_seconds "$users_pid") - $users_cpu" | bc)
    gateway_cpu=$(cpu_seconds "$gateway_pid")
    [ -n "${ONE_CURL:-}" ] && verdicts >"$work/results"
    [ -n "${TIMELINE:-}" ] && print_timeline <"$work/timeline"
    wait "$small"
    peak=$(sed -n 's/^VmHWM:\s*//p' "/proc/$gateway_pid/status")
    # Still serving afterwards.
    curl -sf -o /dev/null "http://$gateway/api/users-via-api?count=10"
    verified=$(grep -c '^200 verified ' "$work/results" || true)
    wall=$(echo "$ended - $started" | bc)
    printf '%-22s %8d %13d %8d %6d %12s %9.2f %13.2f %12s %10s\n' "$route" \
        "$verified" \
        "$(grep -c '^503 gateway_busy ' "$work/results" || true)" \
        "$(grep -c ' CORRUPT ' "$work/results" || true)" \
        "$(grep -vc -e '^200 verified ' -e '^503 gateway_busy ' -e ' CORRUPT ' "$work/results" || true)" \
        "$peak" "$wall" "$(echo "$verified / $wall" | bc -l)" \
        "$(awk '$1 == 503 { if ($3 > max) max = $3 } END { print max + 0 }' "$work/results")" \
        "$(cat "$work/small")"
    grep -v -e '^200 verified ' -e '^503 gateway_busy ' "$work/results" | cut -d' ' -f1,2 |
        sort | uniq -c | sed 's/^/    other: /' || true
    # Where the time went: each service's CPU over the burst, and the refusals and deadline
    # misses behind the retries (curl shows only each request's last answer); users-service's
    # counts are since it started, as it serves every route.
    echo "    CPU during the burst: users-service ${users_cpu} s, gateway ${gateway_cpu} s"
    for service in "$gateway" "$users"; do
        curl -s "http://$service/metrics" |
            grep -E '^(upstream_errors_total|budget_refusals_total|budget_waits_total|shm_claims_exhausted_total)' |
            sed "s|^|    $service: |" || true
    done
    kill "$gateway_pid"
    wait "$gateway_pid" 2>/dev/null || true
done
