#!/usr/bin/env bash
# OpenID Connect conformance: two relying parties nobody here wrote drive a live
# `lintel serve` end to end — openid-client v6 (npm) and Authlib (PyPI) — through
# discovery, PKCE authorization, the hosted login form, code exchange with ID-token
# validation, userinfo, refresh, revocation and logout (conformance/oidc/*); then checks
# modelled on the OpenID Foundation's Basic OP and Config OP modules (oidf_checks.py); then
# the hosted pages in headless chromium (browser.mjs; screenshots under target/).
# Starts its own server on SQLite; exits non-zero on any failure; cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-${root}/target}"
AUTHLIB_VERSION="1.6.5"
node_dir="${target_dir}/oidc-rp-node"
venv="${target_dir}/oidc-rp-venv-${AUTHLIB_VERSION}"

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

step "relying parties: openid-client (npm), Authlib (PyPI)"
mkdir -p "$node_dir"
cp conformance/oidc/package.json conformance/oidc/openid_client_rp.mjs conformance/oidc/browser.mjs "$node_dir/"
(cd "$node_dir" && npm install --silent --no-audit --no-fund >/dev/null)
if [ ! -x "${venv}/bin/python" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "authlib==${AUTHLIB_VERSION}" requests
fi

# The headless-browser test needs Debian's chromium (playwright-core downloads no browser).
if ! [ -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    step "apt-get install chromium"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "FAIL: /usr/bin/chromium is missing (apt-get install chromium)" >&2
    exit 1
  fi
fi

step "cargo build"
cargo build --quiet --bin lintel
lintel="${target_dir}/debug/lintel"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
issuer="http://127.0.0.1:${port}"
run() {
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
    "$lintel" "$@")
}
field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

step "seed (CLI)"
run migrate >/dev/null
EMAIL="rp-user@conformance.test"
PASSWORD="conformance-password-1"
echo "$PASSWORD" | run user create --email "$EMAIL" --first-name Rp --last-name User --password-stdin >/dev/null
REDIRECT_URI="http://127.0.0.1:9/callback"
POST_LOGOUT_URI="http://127.0.0.1:9/signed-out"
created=$(run oidc-client create --name "Conformance RP" --first-party \
  --redirect-uri "$REDIRECT_URI" --post-logout-redirect-uri "$POST_LOGOUT_URI")
CLIENT_ID=$(echo "$created" | field client_id)
CLIENT_SECRET=$(echo "$created" | field client_secret)
created=$(run oidc-client create --name "Post RP" --first-party --auth-method client_secret_post \
  --redirect-uri "$REDIRECT_URI")
POST_CLIENT_ID=$(echo "$created" | field client_id)
POST_CLIENT_SECRET=$(echo "$created" | field client_secret)
run keys rotate --alg RS256 >/dev/null
created=$(run oidc-client create --name "RS256 RP" --first-party --id-token-alg RS256 \
  --redirect-uri "$REDIRECT_URI")
RS256_CLIENT_ID=$(echo "$created" | field client_id)
RS256_CLIENT_SECRET=$(echo "$created" | field client_secret)
# A user of two orgs and a client asking for the `org` scope (the organization picker), for
# the browser test, which also enrols TOTP for this user: a user of its own.
BROWSER_EMAIL="browser@conformance.test"
echo "$PASSWORD" | run user create --email "$BROWSER_EMAIL" --password-stdin >/dev/null
for org in "Alpha Org" "Beta Org"; do
  org_id=$(run org create --name "$org" | field org_id)
  run org add-member --org "$org_id" --user "$BROWSER_EMAIL" >/dev/null
done
ORG_CLIENT_ID=$(run oidc-client create --name "Org RP" --first-party --scope openid --scope org \
  --redirect-uri "$REDIRECT_URI" | field client_id)
export ISSUER="$issuer" CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI EMAIL PASSWORD \
  POST_CLIENT_ID POST_CLIENT_SECRET RS256_CLIENT_ID RS256_CLIENT_SECRET ORG_CLIENT_ID

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

status=0
step "openid-client v6"
node "${node_dir}/openid_client_rp.mjs" || status=1
step "Authlib"
"${venv}/bin/python" conformance/oidc/authlib_rp.py || status=1
step "OIDF Basic/Config OP style checks"
"${venv}/bin/python" conformance/oidc/oidf_checks.py || status=1
step "headless chromium (playwright-core): login, org picker, TOTP, logout, MFA login"
EMAIL="$BROWSER_EMAIL" SHOTS="${target_dir}/oidc-browser-screenshots" \
  node "${node_dir}/browser.mjs" || status=1
echo "screenshots: ${target_dir}/oidc-browser-screenshots"

if grep -q "panicked\|internal error" "${work}/server.log"; then
  echo "FAIL: the server logged internal errors:" >&2
  grep -n "panicked\|internal error" "${work}/server.log" | head -20 >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "FAIL: OIDC conformance" >&2
  exit 1
fi
echo "OIDC conformance: passed"
