#!/usr/bin/env python3
"""A real upstream SAML 2.0 identity provider (SimpleSAMLphp 1.19, Debian package) for the tests.

    python3 tests/upstream/simplesamlphp-idp.py '<json>'      (or a path to a JSON file)

Needs the Debian packages php-cli php-xml php-mbstring simplesamlphp, and openssl; Python 3.11
stdlib only. Runs `php -S 127.0.0.1:P` (a free port unless "port" is given) on a private copy of
the configuration in a temporary directory, prints one JSON line on stdout:
    {"entity_id": "http://127.0.0.1:P/simplesaml/saml2/idp/metadata.php",
     "metadata_url": "http://127.0.0.1:P/simplesaml/saml2/idp/metadata.php",
     "sso_url": "http://127.0.0.1:P/simplesaml/saml2/idp/SSOService.php"}
and serves until SIGTERM/SIGINT, or until stdin ends when stdin is a pipe (so it never outlives
the test that piped it); php is stopped and the directory removed on the way out. Logs (this
script's, php's and SimpleSAMLphp's) go to stderr only.

Config (every key optional except "users" and one of the two SP metadata sources):
    sp_metadata_url      URL of the SP metadata, fetched once at start-up (the SP must be up)
    sp_metadata_xml      the SP metadata inline, instead of a URL
    users                {"alice": {"password": "...", "attributes": {"mail": ["..."], ...}}}
                         (usernames must not contain ":"; values are strings or lists of them)
    sign_response        sign the samlp:Response          (saml20.sign.response)
    sign_assertion       sign the saml:Assertion          (saml20.sign.assertion)
    encrypt_assertion    encrypt the assertion to the SP metadata's encryption cert
                         (assertion.encryption; AES-128-CBC + RSA-OAEP-MGF1P, fixed by SSP 1.19)
                         Each of the three, when absent, is left to SimpleSAMLphp: both signatures
                         on, no encryption, except that the SP metadata's WantAssertionsSigned
                         sets saml20.sign.assertion (so WantAssertionsSigned="false" -> unsigned
                         assertion).
    sign_alg             "rsa-sha256" | "rsa-sha1" | "rsa-sha384" | "rsa-sha512" (or the URI);
                         the digest follows it (SHA-1 digest for rsa-sha1)
    name_id_format       "persistent" | "transient" | "email" | "unspecified" (or the URI);
                         default "persistent". Whatever the AuthnRequest's NameIDPolicy asks for,
                         this format is sent (SSP falls back to the SP-remote NameIDFormat, set
                         to this one).
    name_id_attribute    the attribute whose single value is the NameID (saml:AttributeNameID):
                         default "mail" for email, else "uid". A user without exactly one value
                         gets SimpleSAMLphp's fallback: a transient NameID.
    assertion_lifetime_secs  300
    want_authn_requests_signed  (not set: SimpleSAMLphp takes it from the SP metadata's
                         AuthnRequestsSigned, which becomes validate.authnrequest); true/false
                         here overrides it
    sp_overrides         {key: value} merged last into the SP-remote metadata array (any
                         SimpleSAMLphp saml20-sp-remote option)
    idp_overrides        {key: value} merged last into the saml20-idp-hosted array
    key_pem, cert_pem    paths; if absent a throwaway RSA-2048 key + self-signed cert is made
    port                 0
    php_workers          1       PHP_CLI_SERVER_WORKERS (the built-in server is single-threaded);
                                 with more than 1, a SIGKILL of this script leaves the workers
                                 running (php itself gets SIGTERM through PR_SET_PDEATHSIG)
    debug                false   SimpleSAMLphp DEBUG logging (messages in/out logged to stderr)

Endpoints (SimpleSAMLphp's own, under /simplesaml/; keep the cookies SimpleSAML and
SimpleSAMLAuthToken in a jar, no JavaScript needed):
    GET  saml2/idp/metadata.php     IdP metadata (application/samlmetadata+xml)
    GET  saml2/idp/SSOService.php?SAMLRequest=..[&RelayState=..][&SigAlg=..&Signature=..]
         -> 302 to module.php/core/loginuserpass.php?AuthState=...   (sets cookie SimpleSAML)
    GET  that URL -> 200, the login form:
           <form action="?" method="post" name="f"> ... <input id="username" type="text"
           name="username" ...> <input id="password" type="password" ... name="password" ...>
           <button id="submit_button" class="btn" tabindex="6" type="submit">Login</button>
           <input type="hidden" name="AuthState" value="(HTML-escaped: &amp;)" /></form>
         action="?" is the same path with an empty query.
    POST username, password, AuthState (form-urlencoded) to it
         -> 200 with the auto-post page directly (no redirect; sets SimpleSAMLAuthToken):
           <form method="post" action="ACS URL"> <input type="submit" id="postLoginSubmitButton"/>
           <input type="hidden" name="SAMLResponse" value="(base64)" />
           <input type="hidden" name="RelayState" value="(HTML-escaped, as received)" /> ...</form>
           (RelayState is left out when the request had none)
         -> wrong password: 200, the login form again, with "Incorrect username or password".
    A second AuthnRequest with the same cookies answers the auto-post page at once (IdP session).
    GET  saml2/idp/SSOService.php?spentityid=<sp entityID>&RelayState=...  IdP-initiated: the
         same login steps, then a Response without InResponseTo.

Errors are SimpleSAMLphp's HTML error page, with the exception text in it ("Caused by: ...";
showerrors is on) and, thanks to errors.show_function here, its HTTP code (500 for most; stock
1.19 sends its error pages with 200). For example, SP metadata with AuthnRequestsSigned="true":
    unsigned request -> 500 "SimpleSAML\\Error\\Exception: Validation of received messages
                        enabled, but no signature found on message."
    bad signature    -> 500 "Exception: Unable to validate signature on query string."
    signed, no Destination -> 500 "InvalidArgumentException: Expected a value other than null."
SimpleSAMLphp 1.19 does not check the AuthnRequest's Destination value or IssueInstant, and with
validate.authnrequest off it ignores a query signature altogether (a bad one passes).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SSP_DIR = "/usr/share/simplesamlphp"
PHP = shutil.which("php") or "/usr/bin/php"

SIGN_ALGS = {
    "rsa-sha1": "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "rsa-sha256": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "rsa-sha384": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "rsa-sha512": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
}
NAME_ID_FORMATS = {
    "persistent": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "transient": "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    "email": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "unspecified": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
}
ATTR_NAME_FORMAT_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"

# Turns the SP's XML metadata into a saml20-sp-remote.php with SimpleSAMLphp's own parser, so that
# whatever SimpleSAMLphp derives from it (AuthnRequestsSigned -> validate.authnrequest,
# WantAssertionsSigned -> saml20.sign.assertion, keys, ACS list, NameIDFormat) is kept as is.
CONVERT_PHP = r"""<?php
require '/usr/share/simplesamlphp/lib/_autoload.php';
[, $xmlFile, $overridesFile, $outFile] = $argv;
$overrides = json_decode(file_get_contents($overridesFile), true);
$entities = \SimpleSAML\Metadata\SAMLParser::parseDescriptorsString(file_get_contents($xmlFile));
$out = "<?php\n";
$found = [];
foreach ($entities as $entityId => $entity) {
    $md = $entity->getMetadata20SP();
    if ($md === null) {
        continue;
    }
    unset($md['entityDescriptor']);
    foreach ($overrides as $k => $v) {
        $md[$k] = $v;
    }
    $out .= '$metadata[' . var_export($entityId, true) . '] = ' . var_export($md, true) . ";\n";
    $found[$entityId] = [
        'validate.authnrequest' => $md['validate.authnrequest'] ?? null,
        'saml20.sign.assertion' => $md['saml20.sign.assertion'] ?? null,
        'saml20.sign.response' => $md['saml20.sign.response'] ?? null,
        'assertion.encryption' => $md['assertion.encryption'] ?? null,
        'encryption_key' => count(array_filter($md['keys'] ?? [], fn($k) => $k['encryption'])) > 0,
        'keys' => array_map(fn($k) => ($k['signing'] ? 'signing ' : '') . ($k['encryption'] ? 'encryption' : ''), $md['keys'] ?? []),
        'acs' => array_map(fn($e) => $e['Binding'] . ' ' . $e['Location'], $md['AssertionConsumerService'] ?? []),
    ];
}
if (!$found) {
    fwrite(STDERR, "no SPSSODescriptor in the SP metadata\n");
    exit(1);
}
file_put_contents($outFile, $out);
echo json_encode($found, JSON_UNESCAPED_SLASHES), "\n";
"""


# SimpleSAMLphp 1.19's error page (old UI) is sent with HTTP 200 (Template::setStatusCode() only
# takes effect with Symfony's send()); with errors.show_function, Error::show() sets the error's
# own code first (500; 400 for BadRequest, 403 NOACCESS, ...), then this renders the stock page.
ERROR_PAGE_PHP = r"""if (!class_exists('GatehouseTestErrorPage', false)) {
    class GatehouseTestErrorPage
    {
        public static function show(\SimpleSAML\Configuration $config, array $data): void
        {
            $t = new \SimpleSAML\XHTML\Template($config, 'error.php', 'errors');
            $t->data = array_merge($t->data, $data);
            $t->show();
        }
    }
}
"""


def log(message):
    sys.stderr.write(f"simplesamlphp-idp {time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def php_literal(value):
    """A PHP literal for a JSON-like Python value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(php_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{php_literal(k)} => {php_literal(v)}" for k, v in value.items()) + "]"
    raise TypeError(f"cannot express {value!r} in PHP")


def pick(table, value, what):
    if value in table:
        return table[value]
    if isinstance(value, str) and ":" in value:
        return value
    raise SystemExit(f"simplesamlphp-idp: unknown {what} {value!r} (one of {', '.join(table)} or a URI)")


def die_with_parent():
    """In the child before exec: SIGTERM php if this script dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_sp_metadata(config):
    if config.get("sp_metadata_xml"):
        return config["sp_metadata_xml"]
    url = config.get("sp_metadata_url")
    if not url:
        raise SystemExit("simplesamlphp-idp: sp_metadata_url or sp_metadata_xml is required")
    last = None
    for _ in range(20):  # the SP is supposed to be up; allow it a few seconds anyway
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.25)
    raise SystemExit(f"simplesamlphp-idp: cannot fetch the SP metadata from {url}: {last}")


class Harness:
    def __init__(self, config):
        self.cfg = config
        self.tmp = tempfile.mkdtemp(prefix="simplesamlphp-idp-")
        os.chmod(self.tmp, 0o700)
        self.php = None
        self.stopping = False

    # -- files -------------------------------------------------------------------------------

    def prepare(self):
        """Everything that does not depend on the port."""
        cfg = self.cfg
        for sub in ("config/metadata", "cert", "data", "tmp", "sessions", "log", "docroot"):
            os.makedirs(os.path.join(self.tmp, sub), exist_ok=True)
        # php -S serves docroot/; /simplesaml/* -> SimpleSAMLphp's www/ (it resolves symlinks with
        # realpath() to compute its own URLs, so this matches baseurlpath without a router).
        os.symlink(os.path.join(SSP_DIR, "www"), os.path.join(self.tmp, "docroot", "simplesaml"))

        key, cert = cfg.get("key_pem"), cfg.get("cert_pem")
        keygen = None
        if not (key and cert):
            key, cert = os.path.join(self.tmp, "cert", "idp.key"), os.path.join(self.tmp, "cert", "idp.crt")
            keygen = subprocess.Popen(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
                 "-subj", "/CN=gatehouse-test-simplesamlphp-idp", "-keyout", key, "-out", cert],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        self.key, self.cert = os.path.abspath(key), os.path.abspath(cert)

        users = cfg.get("users")
        if not isinstance(users, dict) or not users:
            raise SystemExit("simplesamlphp-idp: \"users\" is required")
        self.name_id_format = pick(NAME_ID_FORMATS, cfg.get("name_id_format", "persistent"), "name_id_format")
        self.name_id_attr = cfg.get("name_id_attribute") or (
            "mail" if self.name_id_format == NAME_ID_FORMATS["email"] else "uid"
        )
        userpass = {0: "exampleauth:UserPass"}
        for name, record in users.items():
            if ":" in name:
                raise SystemExit(f"simplesamlphp-idp: username {name!r} contains ':' (exampleauth:UserPass)")
            attributes = {
                attr: [str(v) for v in (values if isinstance(values, list) else [values])]
                for attr, values in (record.get("attributes") or {}).items()
            }
            if self.name_id_format != NAME_ID_FORMATS["transient"] and len(attributes.get(self.name_id_attr, [])) != 1:
                log(f"warning: user {name!r} has no single {self.name_id_attr!r} value: SimpleSAMLphp will send a transient NameID")
            userpass[f"{name}:{record.get('password', '')}"] = attributes
        self.write("config/authsources.php", {"admin": ["core:AdminPassword"], "users": userpass})

        # The SP side: SimpleSAMLphp's parser, plus our overrides.
        overrides = {"NameIDFormat": self.name_id_format}
        for key_name, option in (("sign_response", "saml20.sign.response"),
                                 ("sign_assertion", "saml20.sign.assertion"),
                                 ("encrypt_assertion", "assertion.encryption"),
                                 ("want_authn_requests_signed", "validate.authnrequest")):
            if cfg.get(key_name) is not None:
                overrides[option] = bool(cfg[key_name])
        if cfg.get("assertion_lifetime_secs") is not None:
            overrides["assertion.lifetime"] = int(cfg["assertion_lifetime_secs"])
        overrides.update(cfg.get("sp_overrides") or {})
        xml_path = os.path.join(self.tmp, "sp-metadata.xml")
        with open(xml_path, "w", encoding="utf-8") as f:
            f.write(fetch_sp_metadata(cfg))
        ov_path = os.path.join(self.tmp, "sp-overrides.json")
        with open(ov_path, "w", encoding="utf-8") as f:
            json.dump(overrides, f)
        conv_path = os.path.join(self.tmp, "convert.php")
        with open(conv_path, "w", encoding="utf-8") as f:
            f.write(CONVERT_PHP)
        result = subprocess.run(
            [PHP, "-d", "error_reporting=E_ALL & ~E_DEPRECATED", "-d", "display_errors=stderr",
             conv_path, xml_path, ov_path, os.path.join(self.tmp, "config/metadata/saml20-sp-remote.php")],
            env=self.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"simplesamlphp-idp: cannot convert the SP metadata: {result.stderr.strip() or result.stdout.strip()}")
        for entity, summary in json.loads(result.stdout.strip().splitlines()[-1]).items():
            log(f"SP {entity}: {json.dumps(summary)}")
            if summary.get("assertion.encryption") and not summary.get("encryption_key"):
                log(f"warning: assertion.encryption is on but the SP metadata of {entity} has no encryption key: "
                    "SimpleSAMLphp will answer the login with \"Configuration error\" on the login form")

        if keygen is not None and keygen.wait() != 0:
            raise SystemExit(f"simplesamlphp-idp: openssl failed: {keygen.stderr.read().decode(errors='replace')}")

    def configure(self, port):
        """config.php and the hosted IdP, which carry the port."""
        cfg = self.cfg
        base = f"http://127.0.0.1:{port}/simplesaml/"
        self.base = base
        self.entity_id = base + "saml2/idp/metadata.php"
        t = self.tmp
        self.write("config/config.php", {
            "baseurlpath": base,
            "application": {"baseURL": base},
            "certdir": f"{t}/cert/",
            "loggingdir": f"{t}/log/",
            "datadir": f"{t}/data/",
            "tempdir": f"{t}/tmp",
            "metadatadir": f"{t}/config/metadata/",
            "attributenamemapdir": f"{SSP_DIR}/config/attributemap/",
            "secretsalt": secrets.token_hex(16),
            "auth.adminpassword": secrets.token_hex(16),
            "technicalcontact_name": "Gatehouse tests",
            "technicalcontact_email": "na@example.invalid",
            "timezone": "UTC",
            "admin.protectindexpage": True,
            "admin.protectmetadata": False,
            "admin.checkforupdates": False,
            "trusted.url.domains": [f"127.0.0.1:{port}"],
            "enable.http_post": False,
            "debug": {"saml": bool(cfg.get("debug")), "backtraces": True, "validatexml": False},
            "showerrors": True,
            "errorreporting": False,
            "logging.level": 7 if cfg.get("debug") else 6,  # LOG_DEBUG / LOG_INFO
            "logging.handler": "stderr",
            "logging.processname": "simplesamlphp",
            "enable.saml20-idp": True,
            "enable.shib13-idp": False,
            "enable.adfs-idp": False,
            "module.enable": {"exampleauth": True, "core": True, "saml": True, "admin": False},
            "session.duration": 8 * 3600,
            "session.cookie.secure": False,
            "session.cookie.samesite": None,
            "session.cookie.path": "/",
            "session.phpsession.cookiename": "SimpleSAML",
            "session.phpsession.savepath": f"{t}/sessions",
            "session.phpsession.httponly": True,
            "session.authtoken.cookiename": "SimpleSAMLAuthToken",
            "language.cookie.secure": False,
            "language.cookie.samesite": None,
            "language.default": "en",
            "language.available": ["en"],
            "theme.use": "default",
            "usenewui": False,
            "production": True,
            "metadata.sources": [{"type": "flatfile"}],
            "metadata.sign.enable": False,
            "store.type": "phpsession",
            "errors.show_function": ["GatehouseTestErrorPage", "show"],
        }, prelude=ERROR_PAGE_PHP)
        sign_alg = pick(SIGN_ALGS, cfg.get("sign_alg", "rsa-sha256"), "sign_alg")
        hosted = {
            "host": "__DEFAULT__",
            "privatekey": self.key,
            "certificate": self.cert,
            "auth": "users",
            "signature.algorithm": sign_alg,
            "NameIDFormat": self.name_id_format,
            "attributes.NameFormat": ATTR_NAME_FORMAT_BASIC,
            "SingleSignOnServiceBinding": [
                "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
                "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
            ],
            "SingleLogoutServiceBinding": ["urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"],
        }
        if self.name_id_format != NAME_ID_FORMATS["transient"]:
            hosted["authproc"] = {
                10: {"class": "saml:AttributeNameID", "attribute": self.name_id_attr, "Format": self.name_id_format},
            }
        hosted.update(cfg.get("idp_overrides") or {})
        self.write("config/metadata/saml20-idp-hosted.php", {self.entity_id: hosted}, var="metadata")

    def write(self, rel, value, var="config", prelude=""):
        path = os.path.join(self.tmp, rel)
        if var == "config":
            body = prelude + f"$config = {php_literal(value)};\n"
        else:
            body = "".join(f"${var}[{php_literal(k)}] = {php_literal(v)};\n" for k, v in value.items())
        with open(path + ".new", "w", encoding="utf-8") as f:
            f.write("<?php\n" + body)
        os.replace(path + ".new", path)

    def env(self):
        env = dict(os.environ)
        env["SIMPLESAMLPHP_CONFIG_DIR"] = os.path.join(self.tmp, "config")
        workers = int(self.cfg.get("php_workers", 1))
        if workers > 1:
            env["PHP_CLI_SERVER_WORKERS"] = str(workers)
        else:
            env.pop("PHP_CLI_SERVER_WORKERS", None)
        return env

    # -- php -S ------------------------------------------------------------------------------

    def start_php(self, port):
        """Starts php -S; True once it listens, False if the port was taken."""
        ini = [
            "-d", "error_reporting=E_ALL & ~E_DEPRECATED & ~E_STRICT",
            "-d", "display_errors=0", "-d", "log_errors=1", "-d", "error_log=",
            "-d", "date.timezone=UTC", "-d", "session.gc_probability=0",
            "-d", "variables_order=EGPCS",
        ]
        self.php = subprocess.Popen(
            [PHP, *ini, "-S", f"127.0.0.1:{port}", "-t", os.path.join(self.tmp, "docroot")],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, cwd=self.tmp, preexec_fn=die_with_parent,
        )
        started, failed = threading.Event(), threading.Event()

        def pump(stream):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if "Failed to listen" in line:
                    failed.set()
                elif "Development Server" in line and " started" in line:
                    started.set()
                sys.stderr.write(f"php: {line}\n")
                sys.stderr.flush()
            failed.set()  # stderr closed: php is gone

        threading.Thread(target=pump, args=(self.php.stderr,), daemon=True).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if started.is_set():
                return True
            if failed.is_set() or self.php.poll() is not None:
                self.kill_php()
                return False
            time.sleep(0.01)
        raise SystemExit("simplesamlphp-idp: php -S did not start listening")

    def check_own_metadata(self):
        """GETs the IdP metadata; True when our php serves it (our certificate in it)."""
        with open(self.cert, encoding="ascii") as f:
            cert_b64 = "".join(line.strip() for line in f if line.strip() and "-----" not in line)
        try:
            with urllib.request.urlopen(self.entity_id, timeout=20) as resp:
                xml = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            raise SystemExit(f"simplesamlphp-idp: {self.entity_id} answered {exc.code}: {body[:2000]}") from exc
        if self.php.poll() is not None:
            return False
        if "IDPSSODescriptor" not in xml:
            raise SystemExit(f"simplesamlphp-idp: unexpected IdP metadata: {xml[:2000]}")
        return cert_b64 in xml.replace("\n", "").replace(" ", "")

    def run(self):
        self.prepare()
        fixed = int(self.cfg.get("port", 0))
        for _attempt in range(10):
            port = fixed or free_port()
            self.configure(port)
            # One real request proves the configuration loads, and that the port is ours.
            if self.start_php(port) and self.check_own_metadata():
                break
            self.kill_php()
            if fixed:
                raise SystemExit(f"simplesamlphp-idp: php -S cannot listen on 127.0.0.1:{port} (in use?)")
            log(f"port {port} was taken, retrying")
        else:
            raise SystemExit("simplesamlphp-idp: no free port")
        return {
            "entity_id": self.entity_id,
            "metadata_url": self.entity_id,
            "sso_url": self.base + "saml2/idp/SSOService.php",
        }

    def kill_php(self):
        if self.php is not None:
            try:
                os.killpg(self.php.pid, signal.SIGTERM)  # its own session: php and its workers
                # poll(), not wait(): this may run in a signal handler that interrupted a wait.
                deadline = time.monotonic() + 3
                while self.php.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.killpg(self.php.pid, signal.SIGKILL)  # what is left of the group
            except ProcessLookupError:
                pass

    def stop(self):
        if self.stopping:
            return
        self.stopping = True
        self.kill_php()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    arg = sys.argv[1]
    config = json.loads(arg if arg.lstrip().startswith("{") else open(arg, encoding="utf-8").read())
    harness = Harness(config)

    def leave(*_):
        harness.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    signal.signal(signal.SIGHUP, leave)
    try:
        ready = harness.run()
    except BaseException:
        harness.stop()
        raise

    mode = os.fstat(sys.stdin.fileno()).st_mode if sys.stdin else 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        def watch_stdin():
            while sys.stdin.buffer.read1(4096):
                pass
            leave()

        threading.Thread(target=watch_stdin, daemon=True).start()

    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    log(f"listening on {harness.base} (config in {harness.tmp})")
    while harness.php.poll() is None or harness.stopping:
        time.sleep(0.2)
    log(f"php exited with {harness.php.returncode}")
    harness.stop()
    os._exit(1)


if __name__ == "__main__":
    main()
