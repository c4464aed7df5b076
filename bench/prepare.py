#!/usr/bin/env python3
"""Preparation steps of the Gatehouse load benchmark (driven by bench/run.sh).

Python 3 standard library only. Every step talks to a running server over HTTP, exactly as a
browser or a client application would; nothing reads the database.

    prepare.py pkce VERIFIER                     print the S256 code challenge of VERIFIER
    prepare.py login BASE                        sign alice in; print the Cookie header value
    prepare.py cc-token BASE BASIC [PATH]        one client-credentials access token (from the
                                                 token endpoint PATH, default /oauth2/token)
    prepare.py refresh-seeds BASE COOKIE BASIC VERIFIER N OUT
                                                 N refresh tokens, each from its own code
                                                 redemption (its own grant), one per line
    prepare.py saml-starts BASE CONNECTOR VERIFIER N OUT
                                                 N brokered sign-ins started as N browsers
                                                 would: bench-app's authorization request,
                                                 then the SAML connector's redirect to the IdP.
                                                 One line each: request_id TAB relay_state TAB
                                                 the browser's Cookie header value

BASIC is base64(client_id:secret). Any unexpected response stops the step with the request
and the response printed on stderr, so a server problem is reported rather than hidden.
"""

import base64
import hashlib
import http.client
import json
import re
import sys
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor

REDIRECT_URI = "http://127.0.0.1:9/cb"
FORM = "application/x-www-form-urlencoded"


class Unexpected(Exception):
    pass


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def connect(base: str) -> http.client.HTTPConnection:
    url = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)


def call(conn, method, path, body=None, headers=None, expect=200):
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", FORM)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != expect:
        raise Unexpected(
            f"{method} {path} -> HTTP {resp.status} (expected {expect})\n"
            f"response headers: {dict(resp.getheaders())}\nresponse body: {data[:2000].decode(errors='replace')}"
        )
    return resp, data


def session_cookie(resp, jar: dict) -> None:
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie":
            pair = value.split(";", 1)[0]
            key, _, val = pair.partition("=")
            jar[key.strip()] = val.strip()


def cookie_header(jar: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def login(base: str) -> str:
    conn = connect(base)
    jar: dict = {}
    resp, page = call(conn, "GET", "/login")
    session_cookie(resp, jar)
    match = re.search(rb'name="csrf" value="([^"]+)"', page)
    if not match:
        raise Unexpected("GET /login: no csrf field in the page")
    form = urllib.parse.urlencode(
        {"csrf": match.group(1).decode(), "connector": "local", "username": "alice", "password": "alice-password"}
    )
    resp, _ = call(conn, "POST", "/login", body=form, headers={"Cookie": cookie_header(jar)}, expect=303)
    session_cookie(resp, jar)
    return cookie_header(jar)


def cc_token(base: str, basic: str, path: str = "/oauth2/token") -> str:
    conn = connect(base)
    _, data = call(
        conn,
        "POST",
        path,
        body="grant_type=client_credentials&scope=api%3Aread",
        headers={"Authorization": f"Basic {basic}"},
    )
    return json.loads(data)["access_token"]


def authorize_path(verifier: str) -> str:
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": "bench-app",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid offline_access",
            "state": "s",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        },
        quote_via=urllib.parse.quote,
    )
    return "/oauth2/authorize?" + query


def new_code(conn, cookie: str, verifier: str) -> str:
    resp, _ = call(conn, "GET", authorize_path(verifier), headers={"Cookie": cookie}, expect=302)
    location = resp.getheader("Location") or ""
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    if "code" not in params:
        raise Unexpected(f"GET /oauth2/authorize -> 302 without a code: Location: {location}")
    return params["code"][0]


def refresh_seeds(base: str, cookie: str, basic: str, verifier: str, count: int) -> list:
    def worker(n: int) -> list:
        conn = connect(base)
        tokens = []
        for _ in range(n):
            code = new_code(conn, cookie, verifier)
            body = urllib.parse.urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": REDIRECT_URI,
                    "code_verifier": verifier,
                }
            )
            _, data = call(conn, "POST", "/oauth2/token", body=body, headers={"Authorization": f"Basic {basic}"})
            token = json.loads(data).get("refresh_token")
            if not token:
                raise Unexpected(f"code redemption returned no refresh_token: {data[:500]!r}")
            tokens.append(token)
        return tokens

    workers = 4
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(worker, shares))
    return [t for part in results for t in part]


def saml_start(conn, connector: str, verifier: str) -> str:
    """One browser: the app sends it to Gatehouse, which sends it on to the IdP."""
    jar: dict = {}
    resp, _ = call(conn, "GET", authorize_path(verifier), expect=302)
    session_cookie(resp, jar)
    login = resp.getheader("Location") or ""
    req = urllib.parse.parse_qs(urllib.parse.urlsplit(login).query).get("req")
    if not req:
        raise Unexpected(f"GET /oauth2/authorize without a session -> 302 to {login!r}, not the login page")
    path = f"/saml/{connector}/login?req={urllib.parse.quote(req[0])}"
    resp, _ = call(conn, "GET", path, headers={"Cookie": cookie_header(jar)}, expect=303)
    session_cookie(resp, jar)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(resp.getheader("Location") or "").query)
    if "SAMLRequest" not in query or "RelayState" not in query:
        raise Unexpected(f"GET {path} -> 303 without SAMLRequest and RelayState: {resp.getheader('Location')!r}")
    # HTTP-Redirect binding: raw DEFLATE, then base64.
    request = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    request_id = re.search(r'\sID="([^"]+)"', request)
    if not request_id:
        raise Unexpected(f"AuthnRequest without an ID: {request[:500]}")
    return f"{request_id.group(1)}\t{query['RelayState'][0]}\t{cookie_header(jar)}"


def saml_starts(base: str, connector: str, verifier: str, count: int) -> list:
    def worker(n: int) -> list:
        conn = connect(base)
        return [saml_start(conn, connector, verifier) for _ in range(n)]

    workers = 8
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(worker, shares))
    return [line for part in results for line in part]


def main(argv: list) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    step, args = argv[1], argv[2:]
    try:
        if step == "pkce":
            print(s256(args[0]))
        elif step == "authorize-path":
            print(authorize_path(args[0]))
        elif step == "login":
            print(login(args[0]))
        elif step == "cc-token":
            print(cc_token(*args[:3]))
        elif step == "refresh-seeds":
            base, cookie, basic, verifier, count, out = args
            tokens = refresh_seeds(base, cookie, basic, verifier, int(count))
            if len(set(tokens)) != len(tokens):
                raise Unexpected("duplicate refresh tokens")
            with open(out, "w") as f:
                f.write("\n".join(tokens) + "\n")
        elif step == "saml-starts":
            base, connector, verifier, count, out = args
            with open(out, "w") as f:
                f.write("\n".join(saml_starts(base, connector, verifier, int(count))) + "\n")
        else:
            print(f"unknown step {step}\n{__doc__}", file=sys.stderr)
            return 2
    except Unexpected as err:
        print(f"prepare.py {step}: unexpected server response:\n{err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
