#!/usr/bin/env bash
# Schemathesis (an independent, property-based OpenAPI tester) against the management API,
# driven by the API's own document at /api/v1/openapi.json: no 5xx, responses that match
# their declared schemas, content types and status codes. Path parameters are bound to real
# objects seeded through the CLI, so operations reach them and not only 404s.
# Starts its own server on SQLite; exits non-zero on any failure; cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

SCHEMATHESIS_VERSION="4.32.5"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
CHECKS="${SCHEMATHESIS_CHECKS:-not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance}"
target_dir="${CARGO_TARGET_DIR:-${root}/target}"
venv="${target_dir}/schemathesis-venv-${SCHEMATHESIS_VERSION}"

step() { printf '\n==> %s\n' "$*"; }

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    # `run serve &` is a subshell whose child is the server.
    pkill -TERM -P "$server_pid" 2>/dev/null || true
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "schemathesis ${SCHEMATHESIS_VERSION} (venv: ${venv})"
if [ ! -x "${venv}/bin/schemathesis" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
fi
"${venv}/bin/schemathesis" --version

step "cargo build"
cargo build --quiet --bin lintel
lintel="${target_dir}/debug/lintel"

# The server and the CLI share one SQLite file; nothing from the caller's LINTEL_* leaks in
# (and ./config.toml is not read: everything runs in the temp dir).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
run() {
  # exec: the server is this (sub)shell, so killing $! stops it.
  (cd "$work" && exec env -u LINTEL_TEST_POSTGRES_URL -u LINTEL_CONFIG \
    LINTEL_DATABASE_URL="sqlite://${work}/lintel.db" \
    LINTEL_BIND="127.0.0.1:${port}" \
    LINTEL_KEYS_DIR="${work}/keys" \
    LINTEL_DATA_DIR="${work}/data" \
    LINTEL_PASSWORD_ARGON2_MEMORY_KIB=64 \
    LINTEL_PASSWORD_ARGON2_ITERATIONS=1 \
    LINTEL_RATE_LIMITS_MANAGEMENT="1000000/60" \
    LINTEL_RATE_LIMITS_WAITLIST="1000000/60" \
    LINTEL_LOG_LEVEL=warn \
    "$lintel" "$@")
}
field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

step "seed (CLI)"
run migrate >/dev/null
KEY=$(run api-key create --admin --description schemathesis | field key)
ORG_ID=$(run org create --name "Conformance" | field org_id)
OWNER_ID=$(run user create --email owner@conformance.test | field user_id)
run org add-member --org "$ORG_ID" --user "$OWNER_ID" --role owner >/dev/null
USER_ID=$(run user create --email member@conformance.test --org "$ORG_ID" --first-name Mem | field user_id)
DOOMED_USER_ID=$(run user create --email doomed@conformance.test --org "$ORG_ID" | field user_id)
LEAVER_ID=$(run user create --email leaver@conformance.test --org "$ORG_ID" | field user_id)
ROLE_ID=$(run role create --org "$ORG_ID" --name auditor | field role_id)
PARENT_ROLE_ID=$(run role create --org "$ORG_ID" --name reader | field role_id)
DOOMED_ROLE_ID=$(run role create --org "$ORG_ID" --name doomed | field role_id)
PERMISSION_ID=$(run role grant --org "$ORG_ID" --role reader --permission reports:read | field permission_id)
DOOMED_PERMISSION_ID=$(run role grant --org "$ORG_ID" --role doomed --permission doomed:thing | field permission_id)
run role grant --org "$ORG_ID" --role auditor --user "$USER_ID" >/dev/null
run role inherit --org "$ORG_ID" --role auditor --from reader >/dev/null
API_KEY_ID=$(run api-key create --user "$OWNER_ID" --org "$ORG_ID" --permission members:read | field api_key_id)
SCIM_CLIENT_ID=$(run scim-client create --org "$ORG_ID" --name conformance | field client_id)
SCIM_TOKEN_ID=$(run scim-client rotate-token --id "$SCIM_CLIENT_ID" | field token_id)
DOOMED_SCIM_TOKEN_ID=$(run scim-client rotate-token --id "$SCIM_CLIENT_ID" | field token_id)
DOOMED_SCIM_CLIENT_ID=$(run scim-client create --org "$ORG_ID" --name doomed | field client_id)
export SCIM_CLIENT_ID SCIM_TOKEN_ID DOOMED_SCIM_TOKEN_ID DOOMED_SCIM_CLIENT_ID
CLIENT_ID=$(run oidc-client create --name "Conformance RP" --org "$ORG_ID" --redirect-uri https://rp.conformance.test/cb | field client_id)
DOOMED_CLIENT_ID=$(run oidc-client create --name "Doomed RP" --redirect-uri https://rp.conformance.test/cb | field client_id)
export ORG_ID USER_ID DOOMED_USER_ID LEAVER_ID ROLE_ID PARENT_ROLE_ID DOOMED_ROLE_ID \
  PERMISSION_ID DOOMED_PERMISSION_ID API_KEY_ID CLIENT_ID DOOMED_CLIENT_ID

step "lintel serve on 127.0.0.1:${port}"
run serve >"${work}/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:${port}"
for _ in $(seq 1 100); do
  if curl -fsS "${base}/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FAIL: the server exited:" >&2
    cat "${work}/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "${base}/readyz" >/dev/null
# A domain to address (the CLI has no command for it).
curl -fsS -X POST "${base}/api/v1/organizations/${ORG_ID}/domains" \
  -H "Authorization: Bearer ${KEY}" -H 'Content-Type: application/json' \
  -d '{"domain": "conformance.test"}' >/dev/null

# Path (and query) parameters bound to the seeded objects; destructive operations get
# objects of their own, so the rest of the run keeps reaching real ones.
cat >"${work}/schemathesis.toml" <<'EOF'
[parameters]
org_id = "${ORG_ID}"
user_id = "${USER_ID}"
role_id = "${ROLE_ID}"
parent_role_id = "${PARENT_ROLE_ID}"
permission_id = "${PERMISSION_ID}"
api_key_id = "${API_KEY_ID}"
scim_client_id = "${SCIM_CLIENT_ID}"
token_id = "${SCIM_TOKEN_ID}"
client_id = "${CLIENT_ID}"
method = "password"
domain = "conformance.test"

[[operations]]
include-operation-id = "delete_user"
parameters = { user_id = "${DOOMED_USER_ID}" }

[[operations]]
include-operation-id = "remove_member"
parameters = { user_id = "${LEAVER_ID}" }

[[operations]]
include-operation-id = "delete_role"
parameters = { role_id = "${DOOMED_ROLE_ID}" }

[[operations]]
include-operation-id = "delete_scim_client"
parameters = { scim_client_id = "${DOOMED_SCIM_CLIENT_ID}" }

[[operations]]
include-operation-id = "revoke_scim_token"
parameters = { token_id = "${DOOMED_SCIM_TOKEN_ID}" }

[[operations]]
include-operation-id = "delete_permission"
parameters = { permission_id = "${DOOMED_PERMISSION_ID}" }

[[operations]]
include-operation-id = "delete_client"
parameters = { client_id = "${DOOMED_CLIENT_ID}" }
EOF

step "schemathesis run (max ${MAX_EXAMPLES} examples per operation)"
set +e
(cd "$work" && "${venv}/bin/schemathesis" --config-file "${work}/schemathesis.toml" run \
  "${base}/api/v1/openapi.json" \
  -H "Authorization: Bearer ${KEY}" \
  --phases examples,coverage,fuzzing \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  --seed 4242 \
  --workers 2 \
  --report junit --report-junit-path "${work}/junit.xml" \
  --no-color) | tee "${work}/schemathesis.log"
status=${PIPESTATUS[0]}
set -e

if grep -q "panicked\|internal error" "${work}/server.log"; then
  echo "FAIL: the server logged internal errors:" >&2
  grep -n "panicked\|internal error" "${work}/server.log" | head -20 >&2
  status=1
fi

# The seeded bindings were used: the doomed user is gone, the member is still there.
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${KEY}" "${base}/api/v1$1"; }
if [ "$(code "/users/${DOOMED_USER_ID}")" != 404 ] || [ "$(code "/users/${USER_ID}")" != 200 ]; then
  echo "FAIL: the seeded path parameters were not used (schemathesis.toml not applied?)" >&2
  status=1
fi

# Schemathesis's summary: "Test cases:" then "G generated, G passed" or
# "G generated, F found U unique failures[, E errored][, S skipped]".
read -r passed failed < <(sed 's/\x1b\[[0-9;]*m//g' "${work}/schemathesis.log" | python3 -c '
import re, sys
lines = sys.stdin.read().splitlines()
i = max((n for n, l in enumerate(lines) if l.strip() == "Test cases:"), default=None)
line = lines[i + 1] if i is not None and i + 1 < len(lines) else ""
num = lambda w: int(m.group(1)) if (m := re.search(r"(\d+) " + w, line)) else 0
g, f, e, s = num("generated"), num("found"), num("errored"), num("skipped")
print(g - f - e - s, f + e)
')
elapsed=$(($(date +%s) - started))
if [ "$status" -ne 0 ]; then
  echo "FAIL: schemathesis conformance failed (exit ${status}) after ${elapsed}s" >&2
  echo "${passed} passed, ${failed} failed"
  exit 1
fi
echo "schemathesis conformance: ${elapsed}s"
echo "${passed} passed, ${failed} failed"
