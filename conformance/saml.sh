#!/usr/bin/env bash
# SAML conformance: pysaml2 (PyPI) with Debian's xmlsec1 is the corporate IdP of two orgs and
# signs every response; Lintel is the SP. conformance/saml/sp_checks.py: SP-initiated and
# IdP-initiated login, JIT provisioning with mapped names and roles, and the must-reject
# responses (wrong key, edited after signing, wrong audience/destination/recipient/issuer,
# expired, not yet valid, replay, InResponseTo of another request, unsigned, two assertions,
# DOCTYPE, XSW1-8, NameID comment injection). conformance/saml/e2e.py: openid-client (npm)
# as the relying party, home-realm discovery on the hosted login, the SAML IdP, the code and
# an ID token for the JIT user with the mapped org role.
# Starts its own server on SQLite; exits non-zero on any failure; cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-${root}/target}"
PYSAML2_VERSION="7.5.5"
REQUESTS_VERSION="2.34.2"
LXML_VERSION="6.1.3"
venv="${target_dir}/saml-venv-${PYSAML2_VERSION}"
node_dir="${target_dir}/saml-rp-node"

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

# pysaml2 signs and verifies through the xmlsec1 command.
if ! command -v xmlsec1 >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    step "apt-get install xmlsec1"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xmlsec1 >/dev/null
  else
    echo "FAIL: xmlsec1 is missing (apt-get install xmlsec1)" >&2
    exit 1
  fi
fi
export XMLSEC1
XMLSEC1=$(command -v xmlsec1)

step "IdP: pysaml2 ${PYSAML2_VERSION} (venv: ${venv}); RP: openid-client (npm, ${node_dir})"
if [ ! -x "${venv}/bin/python" ] || ! "${venv}/bin/python" -c 'import saml2, lxml, requests' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "pysaml2==${PYSAML2_VERSION}" \
    "requests==${REQUESTS_VERSION}" "lxml==${LXML_VERSION}"
fi
py="${venv}/bin/python -W ignore"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in conformance/saml/
mkdir -p "$node_dir"
cp conformance/saml/package.json conformance/saml/rp.mjs "$node_dir/"
(cd "$node_dir" && npm install --silent --no-audit --no-fund >/dev/null)

step "cargo build"
cargo build --quiet --bin lintel
lintel="${target_dir}/debug/lintel"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
issuer="http://127.0.0.1:${port}"
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
# Home-realm discovery routes only verified domains (README, federation section); the
# operator vouches for them with `org add-domain --verified`.
add_verified_domain() { # ORG_ID DOMAIN
  run org add-domain --org "$1" --domain "$2" --verified >/dev/null
}

step "IdP keys (openssl) and metadata (pysaml2)"
# a: Acme's IdP, a-other: a key Acme's IdP never published, b: Globex's IdP, c: Hooli's.
for k in a-idp a-other b-idp c-idp; do
  openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 365 -subj "/CN=${k} conformance IdP" \
    -keyout "${work}/${k}.key" -out "${work}/${k}.crt" 2>/dev/null
done
# Nobody listens at the SSO URLs: the driver, as the browser, hands each redirect to pysaml2.
A_ENTITY="https://idp.acme.test/saml/metadata"
A_SSO="http://127.0.0.1:9/acme-idp/sso"
B_ENTITY="https://idp.globex.test/saml/metadata"
B_SSO="http://127.0.0.1:9/globex-idp/sso"
C_ENTITY="https://idp.hooli.test/saml/metadata"
C_SSO="http://127.0.0.1:9/hooli-idp/sso"
$py conformance/saml/idp.py metadata "$A_ENTITY" "$A_SSO" "${work}/a-idp.key" "${work}/a-idp.crt" >"${work}/a-metadata.xml"
$py conformance/saml/idp.py metadata "$B_ENTITY" "$B_SSO" "${work}/b-idp.key" "${work}/b-idp.crt" >"${work}/b-metadata.xml"
$py conformance/saml/idp.py metadata "$C_ENTITY" "$C_SSO" "${work}/c-idp.key" "${work}/c-idp.crt" >"${work}/c-metadata.xml"

step "seed (CLI)"
run migrate >/dev/null
ACME_ID=$(run org create --name Acme --slug acme | field org_id)
GLOBEX_ID=$(run org create --name Globex --slug globex | field org_id)
HOOLI_ID=$(run org create --name Hooli --slug hooli | field org_id)
add_verified_domain "$ACME_ID" acme.test
add_verified_domain "$GLOBEX_ID" globex.test
add_verified_domain "$HOOLI_ID" hooli.test
VICTIM_EMAIL="victim@acme.test"
echo "victim-password-1" | run user create --email "$VICTIM_EMAIL" --first-name Vic --last-name Tim --password-stdin >/dev/null
run org add-member --org acme --user "$VICTIM_EMAIL" >/dev/null
LINKED_EMAIL="linked@globex.test"
# Confirmed: only an account whose owner proved the address can be linked to an IdP.
echo "linked-password-1" | run user create --email "$LINKED_EMAIL" --first-name Lin --last-name Ked --password-stdin --email-confirmed >/dev/null
run org add-member --org globex --user "$LINKED_EMAIL" >/dev/null
ADMIN_KEY=$(run api-key create --admin --description saml-conformance | field key)
# Acme: attribute names as pysaml2 sends them (the OIDs of mail/givenName/sn); groups -> role.
run idp create --org acme --type saml --name "Acme IdP" --saml-metadata "${work}/a-metadata.xml" \
  --settings '{"attribute_mapping": {"email": "urn:oid:0.9.2342.19200300.100.1.3",
    "first_name": "urn:oid:2.5.4.42", "last_name": "urn:oid:2.5.4.4", "groups": "groups"},
    "group_roles": {"acme-admins": "admin"}, "default_role": "member",
    "allow_idp_initiated": false}' >"${work}/provider-a.json"
# Globex: the default attribute mapping (pysaml2's FriendlyNames mail/givenName/sn); IdP-initiated
# on; signed AuthnRequests; its emails trusted (linking existing users of globex.test).
run idp create --org globex --type saml --name "Globex IdP" --saml-metadata "${work}/b-metadata.xml" \
  --settings '{"allow_idp_initiated": true, "sign_authn_requests": true, "trust_email": true}' \
  >"${work}/provider-b.json"
# Hooli: assertions must be encrypted to Lintel's SP key.
run idp create --org hooli --type saml --name "Hooli IdP" --saml-metadata "${work}/c-metadata.xml" \
  --settings '{"require_encrypted_assertions": true}' >"${work}/provider-c.json"
REDIRECT_URI="http://127.0.0.1:9/rp/callback"
created=$(run oidc-client create --name "SAML E2E RP" --first-party --redirect-uri "$REDIRECT_URI" \
  --scope openid --scope email --scope profile --scope org)
CLIENT_ID=$(echo "$created" | field client_id)
CLIENT_SECRET=$(echo "$created" | field client_secret)
cat >"${work}/setup.json" <<EOF
{"a": {"org_id": "${ACME_ID}", "slug": "acme", "entity_id": "${A_ENTITY}", "sso_url": "${A_SSO}"},
 "b": {"org_id": "${GLOBEX_ID}", "slug": "globex", "entity_id": "${B_ENTITY}", "sso_url": "${B_SSO}"},
 "c": {"org_id": "${HOOLI_ID}", "slug": "hooli", "entity_id": "${C_ENTITY}", "sso_url": "${C_SSO}"}}
EOF
export LINTEL="$issuer" ISSUER="$issuer" WORK="$work" ADMIN_KEY VICTIM_EMAIL LINKED_EMAIL CLIENT_ID CLIENT_SECRET \
  REDIRECT_URI RP_NODE_DIR="$node_dir"

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
step "pysaml2 IdP: SP-initiated, IdP-initiated, must-reject responses"
$py conformance/saml/sp_checks.py | tee "${work}/sp.out" || status=1
step "end to end: openid-client RP -> home-realm discovery -> pysaml2 IdP -> ID token"
$py conformance/saml/e2e.py | tee "${work}/e2e.out" || status=1

if grep -q "panicked\|internal error" "${work}/server.log"; then
  echo "FAIL: the server logged internal errors:" >&2
  grep -n "panicked\|internal error" "${work}/server.log" | head -20 >&2
  status=1
fi
passed=$(cat "${work}"/sp.out "${work}"/e2e.out | grep -c '^ok ' || true)
failed=$(cat "${work}"/sp.out "${work}"/e2e.out | grep -c '^FAIL ' || true)
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "saml: ${passed} passed, ${failed} failed"
[ "$status" -eq 0 ]
