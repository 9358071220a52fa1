#!/usr/bin/env bash
# SCIM load: 100,000 users in one org and 1,000,000 across 100 orgs, then wrk against the
# release binary. Usage:
#   bash benches/scim_load.sh sqlite            # embedded SQLite
#   bash benches/scim_load.sh postgres URL      # a fresh PostgreSQL database (it is dropped
#                                               # and recreated: pass a throwaway name)
# Env: USERS_BIG (100000), USERS_TOTAL (1000000), ORGS (100), DURATION (15s),
#      CONNECTIONS (32), THREADS (2), WARMUP (3s before each scenario; 0: none).
# Seeding writes rows with SQL (users, memberships, scim_users, metadata); orgs and SCIM
# clients come from the CLI. wrk needs `apt-get install wrk`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
backend=${1:-sqlite}
pg_url=${2:-}
USERS_BIG=${USERS_BIG:-100000}
USERS_TOTAL=${USERS_TOTAL:-1000000}
ORGS=${ORGS:-100}
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin lintel
bin="${root}/target/release/lintel"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept ${work}"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
case "$backend" in
  sqlite) db_url="sqlite://${work}/lintel.db" ;;
  postgres)
    [ -n "$pg_url" ] || { echo "usage: $0 postgres postgres://…/throwaway_db" >&2; exit 2; }
    admin="${pg_url%/*}/postgres"; name="${pg_url##*/}"
    psql "$admin" -qX -c "DROP DATABASE IF EXISTS ${name} WITH (FORCE)" -c "CREATE DATABASE ${name}"
    db_url="$pg_url" ;;
  *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
run() {
  (cd "$work" && exec env -u LINTEL_CONFIG LINTEL_DATABASE_URL="$db_url" LINTEL_BIND="127.0.0.1:${port}" \
    LINTEL_ISSUER="http://127.0.0.1:${port}" LINTEL_KEYS_DIR="${work}/keys" LINTEL_DATA_DIR="${work}/data" \
    LINTEL_RATE_LIMITS_SCIM="100000000/60" LINTEL_LOG_LEVEL=warn \
    LINTEL_DATABASE_MAX_CONNECTIONS="${MAX_CONNECTIONS:-16}" "$bin" "$@")
}
field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

echo "== seed: ${ORGS} orgs, ${USERS_BIG} users in org 0, ${USERS_TOTAL} in all (${backend})"
t0=$(date +%s)
run migrate >/dev/null
TOKEN=""
for o in $(seq 0 $((ORGS - 1))); do
  run org create --name "Bench ${o}" --slug "bench-${o}" >/dev/null
  tok=$(run scim-client create --org "bench-${o}" | field token)
  [ "$o" = 0 ] && TOKEN=$tok
done
rest=$(( (USERS_TOTAL - USERS_BIG) / (ORGS - 1) ))
if [ "$backend" = sqlite ]; then
  sqlite3 "${work}/lintel.db" <<SQL
PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;
CREATE TEMP TABLE plan AS
  WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ${USERS_TOTAL})
  SELECT i, CASE WHEN i < ${USERS_BIG} THEN 0 ELSE 1 + (i - ${USERS_BIG}) / ${rest} END AS o,
         randomblob(16) AS uid FROM n;
DELETE FROM plan WHERE o >= ${ORGS};
CREATE TEMP TABLE orgmap AS
  SELECT org_id, url_safe_org_name, CAST(substr(url_safe_org_name, 7) AS INTEGER) AS o FROM organizations;
BEGIN;
INSERT INTO users (user_id, email, created_at, email_confirmed)
  SELECT uid, 'user' || i || '@bench' || o || '.example', strftime('%s','now'), 0 FROM plan;
INSERT INTO user_organization_info (user_id, org_id, user_role, url_safe_org_name, inherited_user_roles_plus_current_role, user_permissions)
  SELECT p.uid, m.org_id, 'member', m.url_safe_org_name, '["member"]', '["members:read","org:read"]'
  FROM plan p JOIN orgmap m ON m.o = p.o;
INSERT INTO scim_users (org_id, user_id, user_name, user_name_key, display_name, attributes, active)
  SELECT m.org_id, p.uid, 'user' || p.i || '@bench' || p.o || '.example', 'user' || p.i || '@bench' || p.o || '.example', 'User ' || p.i,
         json_object('name', json_object('givenName', 'User', 'familyName', 'N' || p.i),
                     'emails', json_array(json_object('value', 'user' || p.i || '@bench' || p.o || '.example', 'primary', json('true'))),
                     'displayName', 'User ' || p.i, 'active', json('true')), 1
  FROM plan p JOIN orgmap m ON m.o = p.o;
INSERT INTO scim_resource_meta (resource_type, resource_id, org_id, version, created_at, last_modified)
  SELECT 'User', p.uid, m.org_id, 1, strftime('%Y-%m-%dT%H:%M:%S+00:00','now'), strftime('%Y-%m-%dT%H:%M:%S+00:00','now')
  FROM plan p JOIN orgmap m ON m.o = p.o;
COMMIT;
ANALYZE;
SQL
else
  psql "$db_url" -qX -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE plan AS
  SELECT i, CASE WHEN i < ${USERS_BIG} THEN 0 ELSE 1 + (i - ${USERS_BIG}) / ${rest} END AS o,
         gen_random_uuid() AS uid FROM generate_series(0, ${USERS_TOTAL} - 1) AS i;
DELETE FROM plan WHERE o >= ${ORGS};
CREATE TEMP TABLE orgmap AS
  SELECT org_id, url_safe_org_name, substr(url_safe_org_name, 7)::int AS o FROM organizations;
INSERT INTO users (user_id, email, created_at, email_confirmed)
  SELECT uid, 'user' || i || '@bench' || o || '.example', extract(epoch from now())::bigint, false FROM plan;
INSERT INTO user_organization_info (user_id, org_id, user_role, url_safe_org_name, inherited_user_roles_plus_current_role, user_permissions)
  SELECT p.uid, m.org_id, 'member', m.url_safe_org_name, '{member}', '{members:read,org:read}'
  FROM plan p JOIN orgmap m ON m.o = p.o;
INSERT INTO scim_users (org_id, user_id, user_name, user_name_key, display_name, attributes, active)
  SELECT m.org_id, p.uid, 'user' || p.i || '@bench' || p.o || '.example', 'user' || p.i || '@bench' || p.o || '.example', 'User ' || p.i,
         jsonb_build_object('name', jsonb_build_object('givenName', 'User', 'familyName', 'N' || p.i),
                            'emails', jsonb_build_array(jsonb_build_object('value', 'user' || p.i || '@bench' || p.o || '.example', 'primary', true)),
                            'displayName', 'User ' || p.i, 'active', true), true
  FROM plan p JOIN orgmap m ON m.o = p.o;
INSERT INTO scim_resource_meta (resource_type, resource_id, org_id, version, created_at, last_modified)
  SELECT 'User', p.uid, m.org_id, 1, now(), now() FROM plan p JOIN orgmap m ON m.o = p.o;
VACUUM ANALYZE;
SQL
fi
echo "seeded in $(( $(date +%s) - t0 )) s"
[ -n "${SEED_ONLY:-}" ] && exit 0

run serve >"${work}/server.log" 2>&1 &
sleep 0.3
pid=$(pgrep -f "^${bin} serve" | head -1)
until curl -sf -o /dev/null "http://127.0.0.1:${port}/readyz"; do sleep 0.05; done
base="http://127.0.0.1:${port}/scim/v2"
echo "rss_after_start_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
check=$(curl -s -H "Authorization: Bearer ${TOKEN}" "${base}/Users?count=0")
echo "org 0: ${check}"

cat >"${work}/filter.lua" <<LUA
wrk.headers["Authorization"] = "Bearer ${TOKEN}"
request = function()
  local i = math.random(0, ${USERS_BIG} - 1)
  return wrk.format("GET", "/scim/v2/Users?filter=userName%20eq%20%22user" .. i .. "%40bench0.example%22")
end
LUA
cat >"${work}/list.lua" <<LUA
wrk.headers["Authorization"] = "Bearer ${TOKEN}"
request = function()
  local s = math.random(1, ${USERS_BIG} - 100)
  return wrk.format("GET", "/scim/v2/Users?count=100&startIndex=" .. s)
end
LUA
cat >"${work}/first.lua" <<LUA
wrk.headers["Authorization"] = "Bearer ${TOKEN}"
request = function()
  return wrk.format("GET", "/scim/v2/Users?count=100&startIndex=1")
end
LUA
cat >"${work}/create.lua" <<LUA
wrk.headers["Authorization"] = "Bearer ${TOKEN}"
wrk.headers["Content-Type"] = "application/scim+json"
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
local counter = 0
-- Per wrk run (the warm-up and the timed run are seconds apart): userNames never repeat.
local run = os.time()
request = function()
  counter = counter + 1
  local name = "new-" .. run .. "-" .. tid .. "-" .. counter .. "@bench0.example"
  return wrk.format("POST", "/scim/v2/Users", nil,
    '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"' .. name .. '","name":{"givenName":"N","familyName":"B"},"active":true}')
end
LUA

bench() {
  local title=$1 script=$2 conns=${3:-${CONNECTIONS}}
  echo "== ${title} (${conns} connections)"
  # Untimed warm-up (WARMUP, 3s): the OS page cache of a just-written database and the
  # node's caches (tokens, page anchors, rendered users) fill as in a running deployment.
  [ "${WARMUP:-3s}" != 0 ] && wrk -t"${THREADS}" -c"${conns}" -d"${WARMUP:-3s}" -s "$script" "http://127.0.0.1:${port}" >/dev/null
  wrk -t"${THREADS}" -c"${conns}" -d"${DURATION}" --latency -s "$script" "http://127.0.0.1:${port}" \
    | grep -E "Requests/sec|Non-2xx|  (50|90|99)%|Latency  " || true
  echo "cpu_seconds_total=$(awk '{print ($14+$15)/100}' /proc/$pid/stat) rss_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
}
bench "filter userName eq (100k-user org)" "${work}/filter.lua"
bench "filter userName eq (100k-user org)" "${work}/filter.lua" 16
bench "list 100 with totalResults at a random startIndex (100k-user org)" "${work}/list.lua"
bench "list 100, first page (100k-user org)" "${work}/first.lua"
bench "POST /Users" "${work}/create.lua"

# Member PATCH: one group, each request adds one new member of the big org and removes
# another (ids taken from the seeded org).
curl -s -H "Authorization: Bearer ${TOKEN}" "${base}/Users?count=1000&attributes=id" \
  | python3 -c 'import json,sys; print("\n".join(r["id"] for r in json.load(sys.stdin)["Resources"]))' >"${work}/ids.txt"
GID=$(curl -s -H "Authorization: Bearer ${TOKEN}" -H 'Content-Type: application/scim+json' -X POST "${base}/Groups" \
  -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Bench"}' | field id)
python3 - "$work" "$TOKEN" "$GID" <<'PY'
import sys
work, token, gid = sys.argv[1:4]
ids = open(f"{work}/ids.txt").read().split()
with open(f"{work}/patch.lua", "w") as f:
    f.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    f.write('wrk.headers["Content-Type"] = "application/scim+json"\n')
    f.write("local ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n")
    f.write("request = function()\n")
    f.write("  local a = ids[math.random(1, #ids)]\n  local b = ids[math.random(1, #ids)]\n")
    f.write(f'  return wrk.format("PATCH", "/scim/v2/Groups/{gid}", nil, \'{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{{"op":"add","path":"members","value":[{{"value":"\' .. a .. \'"}}]}},{{"op":"remove","path":"members","value":[{{"value":"\' .. b .. \'"}}]}}]}}\')\n')
    f.write("end\n")
PY
bench "member PATCH (add one, remove one)" "${work}/patch.lua"
echo "final_rss_kib=$(awk '/VmRSS/{print $2}' /proc/$pid/status)"
if grep -q "panicked\|SCIM request failed" "${work}/server.log"; then
  echo "server errors:"; grep -m5 "panicked\|SCIM request failed" "${work}/server.log"
fi
