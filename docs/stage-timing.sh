#!/usr/bin/env bash
# stage-timing.sh GATEWAY N: N interleaved requests per route, 40 ms apart (the seed profile's ~25
# requests/s, every process idle between requests); medians of curl's total and of every
# Server-Timing entry, per route.
GW=$1; N=$2
for i in $(seq "$N"); do
  for ep in api shm; do
    sleep 0.04
    curl -s -o /dev/null -D - -w 'total;dur=%{time_total}\n' "http://$GW/api/users-via-$ep?count=708&seed=28" |
      tr -d '\r' | awk -v ep="$ep" 'tolower($1)=="server-timing:" {sub(/^[^:]*: /,""); n=split($0,a,", "); for(k=1;k<=n;k++){split(a[k],b,";dur="); print ep, b[1], b[2]}} /^total;dur=/ {split($0,b,"="); print ep, "total", b[2]*1000}'
  done
done | sort -k1,1 -k2,2 -k3,3n | awk '{key=$1" "$2; c[key]++; v[key,c[key]]=$3} END {for (k in c) printf "%-14s median %.3f ms (n=%d)\n", k, v[k,int((c[k]+1)/2)], c[k]}' | sort
