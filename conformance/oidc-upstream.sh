#!/usr/bin/env bash
# Upstream OIDC conformance: node `oidc-provider` (npm, pinned in oidc-upstream/package.json)
# is an org's corporate OpenID Provider (oidc-upstream/idp.mjs); Lintel is its relying party.
# oidc-upstream/drive.py, as the browser: Lintel's login_url -> the upstream authorization
# request (PKCE S256, state, nonce) -> oidc-provider's login and consent pages -> Lintel's
# callback -> signed in; JIT user with mapped names and the group's role; a second login
# updates the names; a replayed callback or a forged state gives no session; a provider
# configured with a wrong client secret fails with an error page.
# Starts its own server on SQLite; exits non-zero on any failure; cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-${root}/target}"
REQUESTS_VERSION="2.34.2"
venv="${target_dir}/oidc-upstream-venv-${REQUESTS_VERSION}"
node_dir="${target_dir}/oidc-upstream-node"

step() { printf '\n==> %s\n' "$*"; }
work=$(mktemp -d)
server_pid=""
op_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    # `run serve &` is a subshell whose child is the server.
    pkill -TERM -P "$server_pid" 2>/dev/null || true
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$op_pid" ] && kill -0 "$op_pid" 2>/dev/null; then
    kill "$op_pid" 2>/dev/null || true
    wait "$op_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "IdP: oidc-provider (npm, ${node_dir}); browser: requests ${REQUESTS_VERSION} (${venv})"
mkdir -p "$node_dir"
cp conformance/oidc-upstream/package.json conformance/oidc-upstream/idp.mjs "$node_dir/"
(cd "$node_dir" && npm install --silent --no-audit --no-fund >/dev/null)
if [ ! -x "${venv}/bin/python" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "requests==${REQUESTS_VERSION}"
fi

export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in conformance/
step "cargo build"
cargo build --quiet --bin lintel
lintel="${target_dir}/debug/lintel"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
port=$(free_port)
op_port=$(free_port)
issuer="http://127.0.0.1:${port}"
upstream="http://127.0.0.1:${op_port}"
run() {
  # Every login here comes from 127.0.0.1: no per-IP login limit (a 429 would hide the
  # real answer to a must-reject response).
  # exec: the server is this (sub)shell, so killing $! stops it.
  (cd "$work" && exec env -u LINTEL_TEST_POSTGRES_URL -u LINTEL_CONFIG \
    LINTEL_DATABASE_URL="sqlite://${work}/lintel.db" \
    LINTEL_BIND="127.0.0.1:${port}" \
    LINTEL_ISSUER="${issuer}" \
    LINTEL_KEYS_DIR="${work}/keys" \
    LINTEL_DATA_DIR="${work}/data" \
    LINTEL_PASSWORD_ARGON2_MEMORY_KIB=64 \
    LINTEL_PASSWORD_ARGON2_ITERATIONS=1 \
    LINTEL_LOG_LEVEL=warn \
    LINTEL_RATE_LIMITS_LOGIN=100000/60 \
    "$lintel" "$@")
}
field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }
endpoint() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["endpoints"][sys.argv[2]])' "$1" "$2"; }

step "seed (CLI)"
run migrate >/dev/null
UMBRELLA_ID=$(run org create --name Umbrella --slug umbrella | field org_id)
INITECH_ID=$(run org create --name Initech --slug initech | field org_id)
# JIT creates users only with addresses of the org's verified domains (the operator vouches).
run org add-domain --org umbrella --domain umbrella.test --verified >/dev/null
run org add-domain --org initech --domain initech.test --verified >/dev/null
ADMIN_KEY=$(run api-key create --admin --description oidc-upstream-conformance | field key)
UP_CLIENT_ID="lintel-conformance"
UP_CLIENT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
settings="{\"issuer\": \"${upstream}\", \"client_id\": \"${UP_CLIENT_ID}\",
  \"scopes\": [\"openid\", \"email\", \"profile\", \"groups\"],
  \"group_roles\": {\"umbrella-admins\": \"admin\"}, \"default_role\": \"member\"}"
# `--client-secret=…`: a urlsafe secret may start with `-`, which as a separate word the
# CLI parser would take for a flag.
run idp create --org umbrella --type oidc --name "Umbrella OP" --settings "$settings" \
  --client-secret="$UP_CLIENT_SECRET" >"${work}/provider-good.json"
# Initech: the same upstream client, but a secret the upstream never issued.
run idp create --org initech --type oidc --name "Initech OP (wrong secret)" --settings "$settings" \
  --client-secret "not-the-secret" >"${work}/provider-bad-secret.json"
cat >"${work}/setup.json" <<EOF
{"good": {"org_id": "${UMBRELLA_ID}", "slug": "umbrella"}, "bad": {"org_id": "${INITECH_ID}"}}
EOF
echo '{}' >"${work}/accounts.json"

step "lintel serve on ${issuer}"
run serve >"${work}/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "${issuer}/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FAIL: the server exited:" >&2
    cat "${work}/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "${issuer}/readyz" >/dev/null

step "oidc-provider on ${upstream}"
(cd "$node_dir" && exec env PORT="$op_port" CLIENT_ID="$UP_CLIENT_ID" CLIENT_SECRET="$UP_CLIENT_SECRET" \
  REDIRECT_URIS="$(endpoint "${work}/provider-good.json" redirect_uri),$(endpoint "${work}/provider-bad-secret.json" redirect_uri)" \
  ACCOUNTS="${work}/accounts.json" node idp.mjs) >"${work}/op.log" 2>&1 &
op_pid=$!

for _ in $(seq 1 100); do
  if curl -fsS "${upstream}/.well-known/openid-configuration" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$op_pid" 2>/dev/null; then
    echo "FAIL: oidc-provider exited:" >&2
    cat "${work}/op.log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "${upstream}/.well-known/openid-configuration" >/dev/null

status=0
export LINTEL="$issuer" UPSTREAM="$upstream" WORK="$work" ADMIN_KEY ACCOUNTS="${work}/accounts.json"
"${venv}/bin/python" conformance/oidc-upstream/drive.py | tee "${work}/drive.out" || status=1

if grep -q "panicked\|internal error" "${work}/server.log"; then
  echo "FAIL: the server logged internal errors:" >&2
  grep -n "panicked\|internal error" "${work}/server.log" | head -20 >&2
  status=1
fi
if grep -q "server_error" "${work}/op.log"; then
  echo "FAIL: oidc-provider logged server errors:" >&2
  grep -n -A3 "server_error" "${work}/op.log" | head -20 >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- oidc-provider log (tail) ---" >&2
  tail -20 "${work}/op.log" >&2
fi
passed=$(grep -c '^ok ' "${work}/drive.out" || true)
failed=$(grep -c '^FAIL ' "${work}/drive.out" || true)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "oidc-upstream: ${passed} passed, ${failed} failed"
[ "$status" -eq 0 ]
