"""What the federation conformance drivers share: a cookie-keeping browser made of
`requests` that follows redirects one hop at a time and honours SameSite on cross-site POSTs,
the management API (admin key), and a pass/fail tally that ends with `N passed, N failed`.
Used by conformance/saml/*.py and conformance/oidc-upstream/drive.py."""
import html
import re
import sys
import traceback
import urllib.parse

import requests

TIMEOUT = 15


class Browser:
    """One user agent: a cookie jar, no automatic redirects."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.s = requests.Session()
        self.s.headers["User-Agent"] = "lintel-federation-conformance"

    def url(self, path):
        return path if path.startswith("http") else self.base + path

    def get(self, path, **kw):
        return self.s.get(self.url(path), allow_redirects=False, timeout=TIMEOUT, **kw)

    def post(self, path, data, **kw):
        return self.s.post(self.url(path), data=data, allow_redirects=False, timeout=TIMEOUT, **kw)

    def cross_site_post(self, url, data):
        """A form POST from another site (the IdP's auto-submitting form): the browser sends
        only cookies marked SameSite=None (RFC 6265bis §5.5); Lax/Strict/unmarked ones stay home."""
        jar = requests.cookies.RequestsCookieJar()
        for c in self.s.cookies:
            if (c.get_nonstandard_attr("SameSite") or c.get_nonstandard_attr("samesite") or "").lower() == "none":
                jar.set_cookie(c)
        resp = requests.post(url, data=data, cookies=jar, allow_redirects=False, timeout=TIMEOUT,
                             headers={"User-Agent": self.s.headers["User-Agent"]})
        self.s.cookies.update(resp.cookies)
        return resp

    def follow(self, resp, stop=None, limit=10):
        """Follows 30x hops (GET) until a non-redirect, or a Location for which stop(url) is
        true; returns (last response, its URL or the stopping Location)."""
        url = resp.url
        for _ in range(limit):
            if resp.status_code not in (301, 302, 303, 307):
                return resp, url
            loc = urllib.parse.urljoin(url, resp.headers["location"])
            if stop and stop(loc):
                return resp, loc
            resp = self.get(loc)
            url = loc
        raise AssertionError(f"more than {limit} redirects")

    def has_cookie(self, name):
        return any(c.name == name for c in self.s.cookies)

    def signed_in_as(self):
        """The email shown on /account, or None when /account does not answer 200."""
        r = self.get("/account")
        if r.status_code != 200:
            return None
        m = re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", html.unescape(r.text))
        return m[0] if m else ""


def form_fields(page, action_hint=None):
    """(action, {name: value}) of the first <form> (or the first whose action contains hint)."""
    forms = re.findall(r"<form\b([^>]*)>(.*?)</form>", page, re.S | re.I)
    for attrs, body in forms:
        m = re.search(r'action="([^"]*)"', attrs)
        action = html.unescape(m.group(1)) if m else ""
        if action_hint and action_hint not in action:
            continue
        fields = {}
        for tag in re.findall(r"<input\b[^>]*>", body, re.I):
            n = re.search(r'name="([^"]*)"', tag)
            if not n:
                continue
            v = re.search(r'value="([^"]*)"', tag)
            fields[html.unescape(n.group(1))] = html.unescape(v.group(1)) if v else ""
        return action, fields
    raise AssertionError(f"no form{' with ' + action_hint if action_hint else ''} in the page")


class Api:
    """The management API with an admin key."""

    def __init__(self, base, key):
        self.base = base.rstrip("/") + "/api/v1"
        self.h = {"Authorization": f"Bearer {key}"}

    def get(self, path):
        r = requests.get(self.base + path, headers=self.h, timeout=TIMEOUT)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r.json()

    def members(self, org_id):
        out, cursor = [], None
        while True:
            q = "?limit=200" + (f"&cursor={cursor}" if cursor else "")
            page = self.get(f"/organizations/{org_id}/members{q}")
            out += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def user(self, user_id):
        return self.get(f"/users/{user_id}")

    def member_by_email(self, org_id, email):
        """(user, membership) of the org member with this email, or (None, None)."""
        for m in self.members(org_id):
            u = self.user(m["user_id"])
            if u["email"].lower() == email.lower():
                return u, m
        return None, None


class Tally:
    def __init__(self, name):
        self.name = name
        self.passed = []
        self.failed = []

    def check(self, label, fn, *args, **kw):
        try:
            fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
            self.failed.append(label)
            print(f"FAIL {label}: {type(e).__name__}: {e}", flush=True)
            if not isinstance(e, AssertionError):
                traceback.print_exc(limit=4)
            return False
        self.passed.append(label)
        print(f"ok   {label}", flush=True)
        return True

    def finish(self):
        print(f"{self.name}: {len(self.passed)} passed, {len(self.failed)} failed")
        for label in self.failed:
            print(f"  failed: {label}")
        sys.exit(1 if self.failed or not self.passed else 0)
