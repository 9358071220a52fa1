#!/usr/bin/env bash
# Start-up and idle memory of the release binary, in a fresh directory (no DB, no keys).
# Usage: bash benches/startup.sh target/release/lintel [PORT]
# Set LINTEL_DATABASE_URL to a fresh PostgreSQL database to measure that backend.
set -euo pipefail
bin=$1; port=${2:-18181}; shift 2 || true
d=$(mktemp -d); cd "$d"
start=$(date +%s%N)
LINTEL_BIND=127.0.0.1:$port LINTEL_LOG_LEVEL=warn "$bin" "$@" & pid=$!
until curl -sf -o /dev/null http://127.0.0.1:$port/readyz; do sleep 0.005; done
end=$(date +%s%N)
echo "cold_start_to_ready_ms=$(( (end-start)/1000000 ))"
sleep 2
echo "idle_rss_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
for i in $(seq 1 200); do curl -sf -o /dev/null http://127.0.0.1:$port/readyz; done
sleep 1
echo "rss_after_200_requests_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
kill -TERM $pid; wait $pid; echo "exit=$?"
# warm start (DB and key exist)
start=$(date +%s%N)
LINTEL_BIND=127.0.0.1:$port LINTEL_LOG_LEVEL=warn "$bin" & pid=$!
until curl -sf -o /dev/null http://127.0.0.1:$port/readyz; do sleep 0.005; done
end=$(date +%s%N)
echo "warm_start_to_ready_ms=$(( (end-start)/1000000 ))"
kill -TERM $pid; wait $pid
rm -rf "$d"
