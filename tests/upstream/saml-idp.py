#!/usr/bin/env python3
"""A real upstream SAML 2.0 identity provider (pysaml2) for the integration tests.

    python3 tests/upstream/saml-idp.py '<json>'      (or a path to a JSON file)

Binds 127.0.0.1 (a free port unless "port" is given), prints one JSON line on stdout:
    {"entity_id": "http://127.0.0.1:P/metadata", "metadata_url": "http://127.0.0.1:P/metadata",
     "sso_url": "http://127.0.0.1:P/sso/redirect"}
and serves until SIGTERM/SIGINT, or until stdin ends when stdin is a pipe (so it never outlives
the test that piped it). Logs go to stderr only.

Config (every key optional except "users" and one of the two SP metadata sources):
    sp_metadata_url      URL of the SP metadata, fetched when an SSO request arrives (and again on
                         every request, falling back to the last good copy if the fetch fails)
    sp_metadata_xml      the SP metadata inline, instead of a URL
    users                {"alice": {"password": "...", "attributes": {"mail": ["..."], ...}}}
    sign_response        true     sign the samlp:Response
    sign_assertion       true     sign the saml:Assertion (inside the encryption when encrypting)
    encrypt_assertion    false    encrypt the assertion to the SP metadata's encryption cert
                                  (a KeyDescriptor with use="encryption" or no use); refuses
                                  with 500 if the SP metadata has none
    enc_alg              "aes256-cbc" | "aes128-cbc" | "aes256-gcm" | "aes128-gcm"  (key transport
                         is always rsa-oaep-mgf1p with SHA-1)
    sign_alg             "rsa-sha256" | "rsa-sha1" | "rsa-sha384" | "rsa-sha512" (or the URI)
    digest_alg           "sha256" | "sha1" | "sha384" | "sha512" (or the URI)
    name_id_format       "persistent" | "transient" | "email" | "unspecified" (or the URI)
    want_authn_requests_signed  false   advertise it and require a valid query signature
    sign_error_response  sign the Cancel/NoPassive error responses; default: sign_response or
                         sign_assertion (an error response carries no assertion)
    assertion_lifetime_secs  300    Conditions/SubjectConfirmationData NotOnOrAfter
    not_before_skew_secs     0      how far Conditions/@NotBefore is set before "now" (negative:
                                    after, as an IdP whose clock runs ahead)
    audience             the SP's entity ID   the Audience put in assertions (another value plays
                                    an IdP configured with the wrong audience)
    request_clock_window_secs  600  refuse AuthnRequests whose IssueInstant is further from now
    key_pem, cert_pem    paths; if absent a throwaway RSA-2048 key + self-signed cert is made
    port                 0
    debug                false   pysaml2's own debug logging

Endpoints:
    GET  /metadata        IdP metadata (application/samlmetadata+xml)
    GET  /sso/redirect    HTTP-Redirect AuthnRequest -> login form (fields: key, username,
                          password; buttons action=login / action=cancel)
    POST /sso/login       -> auto-post form to the ACS (SAMLResponse, RelayState as received)
    GET  /idp-initiated?user=alice&password=alice-pass[&RelayState=...]  unsolicited Response
    GET  /last-response   the last Response XML as sent (before base64); 404 if none yet
    GET  /last-request    the last AuthnRequest XML received; 404 if none yet

An AuthnRequest gets 400 (plain text saying why) when: it does not inflate/parse; its ID is not an
NCName; its Destination is present but not /sso/redirect, or absent while signed; its
IssueInstant is off by more than request_clock_window_secs; its Issuer is not the SP metadata's
entityID; its AssertionConsumerServiceURL (or Index) is not an HTTP-POST ACS of the SP metadata;
its ProtocolBinding is not HTTP-POST; it is unsigned while want_authn_requests_signed; or its
query signature (checked whenever present, over the raw query as the bindings spec says) fails
against the SP metadata's signing certs. IsPassive="true" gets a Responder/NoPassive response.
"""

import base64
import calendar
import hashlib
import hmac
import html
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_keypair(directory):
    """Starts openssl on a throwaway RSA-2048 key + self-signed cert; returns (process, key, cert)."""
    key, cert = os.path.join(directory, "idp.key"), os.path.join(directory, "idp.crt")
    process = subprocess.Popen(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
         "-subj", "/CN=gatehouse-test-saml-idp", "-keyout", key, "-out", cert],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return process, key, cert


if __name__ == "__main__":
    # Before the pysaml2 imports below (~0.8 s: they build XML schema validators), so that the
    # key generation runs meanwhile.
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    CONFIG = json.loads(sys.argv[1] if sys.argv[1].lstrip().startswith("{") else open(sys.argv[1], encoding="utf-8").read())
    TMPDIR = tempfile.mkdtemp(prefix="saml-idp-")

    def leave(*_):
        shutil.rmtree(TMPDIR, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    KEYGEN = None if CONFIG.get("key_pem") and CONFIG.get("cert_pem") else make_keypair(TMPDIR)

warnings.filterwarnings("ignore", message=".*has been moved to cryptography.hazmat.decrepit")

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml, samlp, time_util, xmldsig
    from saml2.assertion import Policy
    from saml2.attribute_converter import AttributeConverter, do_ava
    from saml2.authn_context import PASSWORDPROTECTEDTRANSPORT
    from saml2.config import IdPConfig
    from saml2.metadata import entity_descriptor, metadata_tostring_fix
    from saml2.saml import NAME_FORMAT_BASIC
    from saml2.server import Server
    from saml2.sigver import get_pem_wrapped_unwrapped, make_temp, pre_encryption_part
    from saml2.time_util import instant
    from saml2.validate import valid_instance
except ImportError as exc:
    if __name__ == "__main__":
        shutil.rmtree(TMPDIR, ignore_errors=True)
    raise SystemExit(f"saml-idp: {exc}: run it with a Python that has tests/upstream/requirements-saml.txt") from exc

log = logging.getLogger("saml-idp")

SIGN_ALGS = {
    "rsa-sha1": xmldsig.SIG_RSA_SHA1,
    "rsa-sha256": xmldsig.SIG_RSA_SHA256,
    "rsa-sha384": xmldsig.SIG_RSA_SHA384,
    "rsa-sha512": xmldsig.SIG_RSA_SHA512,
}
DIGEST_ALGS = {
    "sha1": xmldsig.DIGEST_SHA1,
    "sha256": xmldsig.DIGEST_SHA256,
    "sha384": xmldsig.DIGEST_SHA384,
    "sha512": xmldsig.DIGEST_SHA512,
}
NAME_ID_FORMATS = {
    "persistent": saml.NAMEID_FORMAT_PERSISTENT,
    "transient": saml.NAMEID_FORMAT_TRANSIENT,
    "email": saml.NAMEID_FORMAT_EMAILADDRESS,
    "unspecified": saml.NAMEID_FORMAT_UNSPECIFIED,
}
# name -> (EncryptionMethod URI, xmlsec1 --session-key)
ENC_ALGS = {
    "aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "aes-128"),
    "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", "aes-256"),
    "aes128-gcm": ("http://www.w3.org/2009/xmlenc11#aes128-gcm", "aes-128"),
    "aes256-gcm": ("http://www.w3.org/2009/xmlenc11#aes256-gcm", "aes-256"),
}
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
# SigAlg URIs accepted on HTTP-Redirect AuthnRequests.
REDIRECT_SIG_HASHES = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": ("ec", hashes.SHA512),
}

NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class BadRequest(Exception):
    """Answered with 400 and the message as plain text."""


class ServerError(Exception):
    """Answered with 500 and the message as plain text."""


def pick(table, value, what):
    if value in table:
        return table[value]
    if isinstance(value, str) and ":" in value:  # a full URI
        return value
    raise SystemExit(f"saml-idp: unknown {what} {value!r} (one of {', '.join(table)} or a URI)")


class VerbatimBasicNames(AttributeConverter):
    """Attribute names exactly as configured, NameFormat basic, no FriendlyName.

    pysaml2's stock converters rename known names (mail -> urn:mace:dir:attribute-def:mail, or
    urn:oid:...) and its NOOP converter lowercases them; this one does neither."""

    def __init__(self):
        super().__init__(NAME_FORMAT_BASIC)

    def to_(self, attrvals):
        return [
            saml.Attribute(name=name, name_format=NAME_FORMAT_BASIC, attribute_value=do_ava(values))
            for name, values in attrvals.items()
        ]


class ReleaseEverything(Policy):
    """Release every configured attribute (pysaml2 would otherwise filter them by the SP
    metadata's RequestedAttributes), with basic name format and our own lifetimes."""

    def __init__(self, mds, lifetime_secs, not_before_skew_secs, audience=None):
        super().__init__(
            {"default": {"name_form": NAME_FORMAT_BASIC, "lifetime": {"seconds": lifetime_secs}}}, mds=mds
        )
        self.skew = not_before_skew_secs
        self.audience = audience

    def restrict(self, ava, sp_entity_id, metadata=None):
        return dict(ava)

    def conditions(self, sp_entity_id):
        conditions = super().conditions(self.audience or sp_entity_id)
        if self.skew:
            conditions.not_before = instant(time_stamp=time.time() - self.skew)
        return conditions


class IdpServer(Server):
    """pysaml2's Server, with the assertion encrypted by AES-CBC/GCM + RSA-OAEP (pysaml2's
    default is 3DES-CBC, which modern SPs rightly refuse)."""

    enc_alg = ENC_ALGS["aes256-cbc"]

    def _encrypt_assertion(self, encrypt_cert, sp_entity_id, response, node_xpath=None):
        if not encrypt_cert:
            raise ServerError("no encryption certificate for the SP")
        wrapped, unwrapped = get_pem_wrapped_unwrapped(encrypt_cert)
        tmp = make_temp(wrapped.encode("ascii"), decode=False, delete_tmpfiles=True)
        template = pre_encryption_part(msg_enc=self.enc_alg[0], key_enc=RSA_OAEP_MGF1P, encrypt_cert=unwrapped)
        return self.sec.encrypt_assertion(
            response, tmp.name, template, key_type=self.enc_alg[1], node_xpath=node_xpath
        )


def load_public_key(cert_text):
    body = "".join(line.strip() for line in cert_text.splitlines() if line.strip() and "-----" not in line)
    return x509.load_der_x509_certificate(base64.b64decode(body)).public_key()


def raw_query_params(query):
    """The first occurrence of each parameter, still URL-encoded exactly as sent."""
    raw = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        raw.setdefault(urllib.parse.unquote_plus(name), value)
    return raw


def verify_redirect_signature(raw, certs):
    """SAML bindings 3.4.4.1: the signature covers SAMLRequest=..&RelayState=..&SigAlg=.. exactly
    as URL-encoded in the query (pysaml2 instead re-encodes the decoded values, which breaks on
    any encoder that differs from Python's quote_plus)."""
    sig_alg = urllib.parse.unquote_plus(raw["SigAlg"])
    if sig_alg not in REDIRECT_SIG_HASHES:
        raise BadRequest(f"unsupported SigAlg {sig_alg}")
    kind, hash_cls = REDIRECT_SIG_HASHES[sig_alg]
    signed = f"SAMLRequest={raw['SAMLRequest']}"
    if "RelayState" in raw:
        signed += f"&RelayState={raw['RelayState']}"
    signed = (signed + f"&SigAlg={raw['SigAlg']}").encode("ascii")
    try:
        signature = base64.b64decode(urllib.parse.unquote_plus(raw["Signature"]), validate=True)
    except ValueError as exc:
        raise BadRequest("Signature is not base64") from exc
    for _name, cert in certs:
        key = load_public_key(cert)
        try:
            if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PKCS1v15(), hash_cls())
                return True
            if kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
                # XML DSig 1.1 says r || s; some SPs send the DER form: accept either.
                half = len(signature) // 2
                raw_rs = encode_dss_signature(
                    int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
                )
                for der in (raw_rs, signature):
                    try:
                        key.verify(der, signed, ec.ECDSA(hash_cls()))
                        return True
                    except InvalidSignature:
                        pass
        except InvalidSignature:
            continue
    return False


class Idp:
    def __init__(self, config, base_url, keygen):
        self.cfg = config
        self.base = base_url
        self.entity_id = f"{base_url}/metadata"
        self.sso_url = f"{base_url}/sso/redirect"
        self.users = config["users"]
        self.sign_response = bool(config.get("sign_response", True))
        self.sign_assertion = bool(config.get("sign_assertion", True))
        self.encrypt = bool(config.get("encrypt_assertion", False))
        self.sign_error = bool(config.get("sign_error_response", self.sign_response or self.sign_assertion))
        self.sign_alg = pick(SIGN_ALGS, config.get("sign_alg", "rsa-sha256"), "sign_alg")
        self.digest_alg = pick(DIGEST_ALGS, config.get("digest_alg", "sha256"), "digest_alg")
        self.name_id_format = pick(NAME_ID_FORMATS, config.get("name_id_format", "persistent"), "name_id_format")
        self.want_signed = bool(config.get("want_authn_requests_signed", False))
        self.request_window = int(config.get("request_clock_window_secs", 600))
        if not (config.get("sp_metadata_url") or config.get("sp_metadata_xml")):
            raise SystemExit("saml-idp: sp_metadata_url or sp_metadata_xml is required")

        key, cert = config.get("key_pem"), config.get("cert_pem")
        if keygen is not None:
            process, key, cert = keygen
            if process.wait() != 0:
                raise SystemExit(f"saml-idp: openssl failed: {process.stderr.read().decode(errors='replace')}")
        self.persistent_secret = hashlib.sha256(b"gatehouse-test-saml-idp").digest()

        idp_conf = IdPConfig()
        idp_conf.load({
            "entityid": self.entity_id,
            "service": {
                "idp": {
                    "name": "Gatehouse test IdP",
                    "endpoints": {"single_sign_on_service": [(self.sso_url, BINDING_HTTP_REDIRECT)]},
                    "name_id_format": [self.name_id_format],
                    "want_authn_requests_signed": self.want_signed,
                },
            },
            "key_file": key,
            "cert_file": cert,
            "xmlsec_binary": shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
            "metadata": {},
            "signing_algorithm": self.sign_alg,
            "digest_algorithm": self.digest_alg,
            "delete_tmpfiles": True,
        })
        # Without xmlsec_binary, pysaml2 skips its alg:DigestMethod/alg:SigningMethod extension,
        # which lists everything xmlsec1 knows (md5 included) and costs an xmlsec1 run.
        idp_conf.xmlsec_binary, xmlsec_binary = None, idp_conf.xmlsec_binary
        descriptor = entity_descriptor(idp_conf)
        idp_conf.xmlsec_binary = xmlsec_binary
        valid_instance(descriptor)
        xml = metadata_tostring_fix(descriptor, {"xs": "http://www.w3.org/2001/XMLSchema"})
        xml = xml.decode() if isinstance(xml, bytes) else xml
        self.metadata_xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + xml
        # The redirect binding's query signature is checked here (verify_redirect_signature), not
        # by pysaml2: the metadata above advertises the setting, the parser must not enforce it.
        idp_conf.setattr("idp", "want_authn_requests_signed", False)

        self.server = IdpServer(config=idp_conf)
        enc_alg = config.get("enc_alg", "aes256-cbc")
        if enc_alg not in ENC_ALGS:
            raise SystemExit("saml-idp: enc_alg must be one of " + ", ".join(ENC_ALGS))
        self.server.enc_alg = ENC_ALGS[enc_alg]
        self.server.config.attribute_converters = [VerbatimBasicNames()] + list(
            self.server.config.attribute_converters or []
        )
        self.policy = ReleaseEverything(
            self.server.metadata,
            int(config.get("assertion_lifetime_secs", 300)),
            int(config.get("not_before_skew_secs", 0)),
            config.get("audience"),
        )
        self.lock = threading.Lock()  # pysaml2 and its metadata store are not thread-safe
        self.sp_metadata_cache = None
        self.pending = {}  # key -> pending AuthnRequest
        self.last_response = None
        self.last_request = None

    # -- SP metadata -----------------------------------------------------------------------

    def refresh_sp_metadata(self):
        """(Re)load the SP metadata: fetched on each SSO request, since the SP may start after
        the IdP and may change its keys; the last good copy is kept if a fetch fails."""
        if self.cfg.get("sp_metadata_xml"):
            xml = self.cfg["sp_metadata_xml"]
        else:
            url = self.cfg["sp_metadata_url"]
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    xml = resp.read().decode("utf-8")
            except Exception as exc:  # noqa: BLE001
                if self.sp_metadata_cache is None:
                    raise ServerError(f"cannot fetch the SP metadata from {url}: {exc}") from exc
                log.warning("SP metadata fetch failed (%s); keeping the previous copy", exc)
                return
        if xml == self.sp_metadata_cache:
            return
        store = self.server.metadata
        previous = dict(store.metadata)
        store.metadata.clear()
        try:
            store.load("inline", xml)
        except Exception as exc:  # noqa: BLE001
            store.metadata.clear()
            store.metadata.update(previous)
            raise ServerError(f"unusable SP metadata: {exc}") from exc
        self.sp_metadata_cache = xml
        log.info("loaded SP metadata for %s", ", ".join(store.keys()))

    def sp_entities(self):
        return [eid for eid in self.server.metadata.keys() if "spsso_descriptor" in self.server.metadata[eid]]

    def default_acs(self, sp):
        services = self.server.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST)
        if not services:
            raise BadRequest(f"the SP metadata of {sp} has no HTTP-POST AssertionConsumerService")
        for srv in services:
            if str(srv.get("is_default", "")).lower() == "true":
                return srv["location"]
        return sorted(services, key=lambda s: int(s.get("index") or 0))[0]["location"]

    def acs_for(self, sp, request):
        known = self.server.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST)
        binding = request.protocol_binding
        if binding and binding != BINDING_HTTP_POST:
            raise BadRequest(f"unsupported ProtocolBinding {binding} (only HTTP-POST)")
        if request.assertion_consumer_service_url:
            url = request.assertion_consumer_service_url
            if url not in [srv["location"] for srv in known]:
                raise BadRequest(f"AssertionConsumerServiceURL {url} is not in the SP metadata")
            return url
        if request.assertion_consumer_service_index is not None:
            for srv in known:
                if str(srv.get("index")) == str(request.assertion_consumer_service_index):
                    return srv["location"]
            raise BadRequest(f"no HTTP-POST ACS with index {request.assertion_consumer_service_index}")
        return self.default_acs(sp)

    # -- SSO ---------------------------------------------------------------------------------

    def receive_authn_request(self, query):
        raw = raw_query_params(query)
        if "SAMLRequest" not in raw:
            raise BadRequest("missing SAMLRequest")
        value = {k: urllib.parse.unquote_plus(v) for k, v in raw.items()}
        with self.lock:
            self.refresh_sp_metadata()
            try:
                parsed = self.server.parse_authn_request(value["SAMLRequest"], BINDING_HTTP_REDIRECT)
            except Exception as exc:  # noqa: BLE001
                raise BadRequest(f"unparsable AuthnRequest: {type(exc).__name__}: {exc}") from exc
            if parsed is None:
                raise BadRequest("unparsable AuthnRequest")
            xmlstr = parsed.xmlstr
            self.last_request = xmlstr.decode("utf-8") if isinstance(xmlstr, bytes) else str(xmlstr)
            request = parsed.message
            if not NCNAME.fullmatch(request.id or ""):
                # pysaml2 lets it through; xs:ID is an NCName, and e.g. Entra ID refuses IDs that
                # start with a digit.
                raise BadRequest(f"AuthnRequest ID {request.id!r} is not an xs:ID (NCName)")
            try:
                issued = time_util.str_to_time(request.issue_instant)
            except Exception as exc:  # noqa: BLE001
                raise BadRequest(f"bad IssueInstant {request.issue_instant!r}") from exc
            if abs(calendar.timegm(issued) - time.time()) > self.request_window:
                # pysaml2 only logs this; real IdPs refuse stale or future requests.
                raise BadRequest(f"IssueInstant {request.issue_instant} is more than {self.request_window} s from now")
            sp = request.issuer.text.strip() if request.issuer is not None and request.issuer.text else None
            if not sp:
                raise BadRequest("the AuthnRequest has no Issuer")
            if sp not in self.sp_entities():
                raise BadRequest(f"unknown SP {sp} (not in the SP metadata)")
            signed = "Signature" in raw or "SigAlg" in raw
            if self.want_signed and not signed:
                raise BadRequest("the AuthnRequest must be signed (WantAuthnRequestsSigned)")
            if signed:
                if "Signature" not in raw or "SigAlg" not in raw:
                    raise BadRequest("SigAlg and Signature must come together")
                if not request.destination:  # SAML bindings 3.4.5.2 (pysaml2 checks it when present)
                    raise BadRequest("a signed AuthnRequest must carry a Destination")
                certs = self.server.metadata.certs(sp, "spsso", "signing")
                if not certs:
                    raise BadRequest(f"the SP metadata of {sp} has no signing certificate")
                if not verify_redirect_signature(raw, certs):
                    raise BadRequest("invalid AuthnRequest signature")
            acs = self.acs_for(sp, request)
        pending = {
            "id": request.id,
            "sp": sp,
            "acs": acs,
            "relay_state": value.get("RelayState"),
            "is_passive": str(request.is_passive).lower() == "true",
        }
        log.info("AuthnRequest %s from %s -> %s (signed: %s)", request.id, sp, acs, signed)
        return pending

    def name_id(self, user, sp):
        if self.name_id_format == saml.NAMEID_FORMAT_PERSISTENT:
            # Stable per (user, SP), across restarts of this IdP too.
            value = hmac.new(self.persistent_secret, f"{user}\0{sp}".encode(), hashlib.sha256).hexdigest()
        elif self.name_id_format == saml.NAMEID_FORMAT_TRANSIENT:
            value = "_" + secrets.token_hex(20)
        elif self.name_id_format == saml.NAMEID_FORMAT_EMAILADDRESS:
            mail = self.users[user].get("attributes", {}).get("mail") or [f"{user}@example.invalid"]
            value = mail[0] if isinstance(mail, list) else mail
        else:
            value = user
        return saml.NameID(
            format=self.name_id_format, sp_name_qualifier=sp, name_qualifier=self.entity_id, text=value
        )

    def success_response(self, user, sp, acs, in_response_to):
        attributes = {
            name: values if isinstance(values, list) else [values]
            for name, values in self.users[user].get("attributes", {}).items()
        }
        with self.lock:
            self.refresh_sp_metadata()
            encrypt_cert = None
            if self.encrypt:
                certs = self.server.metadata.certs(sp, "spsso", "encryption")
                if not certs:
                    raise ServerError(f"encrypt_assertion is set but the SP metadata of {sp} has no encryption key")
                encrypt_cert = certs[0][1]
            response = self.server.create_authn_response(
                attributes,
                in_response_to,
                acs,
                sp,
                name_id=self.name_id(user, sp),
                authn={"class_ref": PASSWORDPROTECTEDTRANSPORT, "authn_auth": self.entity_id},
                sign_response=self.sign_response,
                sign_assertion=self.sign_assertion,
                encrypt_assertion=self.encrypt,
                encrypt_cert_assertion=encrypt_cert,
                sign_alg=self.sign_alg,
                digest_alg=self.digest_alg,
                release_policy=self.policy,
                best_effort=True,
            )
        return self.finish(response)

    def error_response(self, sp, acs, in_response_to, code, message):
        with self.lock:
            response = self.server.create_error_response(
                in_response_to,
                acs,
                (code, message),
                sign=self.sign_error,
                sign_alg=self.sign_alg,
                digest_alg=self.digest_alg,
            )
        return self.finish(response)

    def finish(self, response):
        if isinstance(response, list):  # pysaml2 returns str(response).split("\n") on some errors
            response = "\n".join(response)
        xml = response if isinstance(response, str) else str(response)
        if not xml.lstrip().startswith("<?xml"):
            xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + xml  # xmlsec1 output already has one
        self.last_response = xml
        return base64.b64encode(xml.encode("utf-8")).decode("ascii")

    def check_password(self, user, password):
        record = self.users.get(user)
        return record is not None and hmac.compare_digest(
            str(record.get("password", "")).encode(), (password or "").encode()
        )


# -- HTML ----------------------------------------------------------------------------------------


def page(title, body):
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
        + html.escape(title)
        + "</title></head>\n<body>\n"
        + body
        + "\n</body></html>\n"
    )


def login_page(key, error=None, username=""):
    err = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    return page(
        "Sign in - Gatehouse test IdP",
        f"""<h1>Sign in to the test IdP</h1>
{err}<form method="post" action="/sso/login">
<input type="hidden" name="key" value="{html.escape(key, quote=True)}">
<label>Username <input type="text" name="username" value="{html.escape(username, quote=True)}" autofocus></label>
<label>Password <input type="password" name="password" value=""></label>
<button type="submit" name="action" value="login">Sign in</button>
<button type="submit" name="action" value="cancel">Cancel</button>
</form>""",
    )


def post_page(acs, saml_response, relay_state):
    fields = f'<input type="hidden" name="SAMLResponse" value="{saml_response}">\n'
    if relay_state is not None:
        fields += f'<input type="hidden" name="RelayState" value="{html.escape(relay_state, quote=True)}">\n'
    return page(
        "Continue - Gatehouse test IdP",
        f"""<form method="post" action="{html.escape(acs, quote=True)}">
{fields}<noscript><p>JavaScript is off: press Continue.</p></noscript>
<input type="submit" value="Continue">
</form>
<script>document.forms[0].submit();</script>""",
    )


# -- HTTP ----------------------------------------------------------------------------------------


def make_handler(idp):
    class Handler(BaseHTTPRequestHandler):
        server_version = "gatehouse-test-saml-idp"

        def log_message(self, fmt, *args):
            message = fmt % args
            log.info("%s", message if len(message) < 200 else message[:160] + "..." + message[-30:])

        def send(self, status, body, content_type="text/html; charset=utf-8"):
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def guarded(self, action):
            try:
                action()
            except BadRequest as exc:
                log.warning("400: %s", exc)
                self.send(400, f"{exc}\n", "text/plain; charset=utf-8")
            except ServerError as exc:
                log.error("500: %s", exc)
                self.send(500, f"{exc}\n", "text/plain; charset=utf-8")
            except Exception as exc:  # noqa: BLE001
                log.exception("500")
                self.send(500, f"internal error: {type(exc).__name__}: {exc}\n", "text/plain; charset=utf-8")

        def do_GET(self):
            self.guarded(self.get)

        def do_POST(self):
            self.guarded(self.post)

        def get(self):
            path, _, query = self.path.partition("?")
            if path == "/metadata":
                self.send(200, idp.metadata_xml, "application/samlmetadata+xml")
            elif path == "/sso/redirect":
                self.sso_redirect(query)
            elif path == "/idp-initiated":
                self.idp_initiated(query)
            elif path == "/last-response":
                if idp.last_response is None:
                    self.send(404, "no response yet\n", "text/plain; charset=utf-8")
                else:
                    self.send(200, idp.last_response, "application/xml; charset=utf-8")
            elif path == "/last-request":
                if idp.last_request is None:
                    self.send(404, "no request yet\n", "text/plain; charset=utf-8")
                else:
                    self.send(200, idp.last_request, "application/xml; charset=utf-8")
            else:
                self.send(404, "not found\n", "text/plain; charset=utf-8")

        def post(self):
            path = self.path.partition("?")[0]
            if path == "/sso/login":
                self.sso_login()
            else:
                self.send(404, "not found\n", "text/plain; charset=utf-8")

        def sso_redirect(self, query):
            pending = idp.receive_authn_request(query)
            if pending["is_passive"]:  # no IdP sessions here, so a passive request cannot succeed
                saml_response = idp.error_response(
                    pending["sp"], pending["acs"], pending["id"], samlp.STATUS_NO_PASSIVE, "No session"
                )
                self.send(200, post_page(pending["acs"], saml_response, pending["relay_state"]))
                return
            key = secrets.token_urlsafe(24)
            idp.pending[key] = pending
            self.send(200, login_page(key))

        def sso_login(self):
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"), keep_blank_values=True)
            field = lambda name: (form.get(name) or [""])[0]  # noqa: E731
            key = field("key")
            pending = idp.pending.get(key)
            if pending is None:
                raise BadRequest("unknown or already used login key")
            if field("action") == "cancel" or "cancel" in form:
                idp.pending.pop(key, None)
                log.info("login for %s cancelled", pending["id"])
                saml_response = idp.error_response(
                    pending["sp"], pending["acs"], pending["id"], samlp.STATUS_AUTHN_FAILED, "The user cancelled"
                )
                self.send(200, post_page(pending["acs"], saml_response, pending["relay_state"]))
                return
            user = field("username")
            if not idp.check_password(user, field("password")):
                log.info("wrong username or password for %r", user)
                self.send(200, login_page(key, "Wrong username or password.", user))
                return
            idp.pending.pop(key, None)
            saml_response = idp.success_response(user, pending["sp"], pending["acs"], pending["id"])
            log.info("signed in %s for %s", user, pending["sp"])
            self.send(200, post_page(pending["acs"], saml_response, pending["relay_state"]))

        def idp_initiated(self, query):
            params = urllib.parse.parse_qs(query, keep_blank_values=True)
            param = lambda name: (params.get(name) or [None])[0]  # noqa: E731
            user = param("user")
            if not idp.check_password(user, param("password")):
                self.send(403, "wrong user or password\n", "text/plain; charset=utf-8")
                return
            with idp.lock:
                idp.refresh_sp_metadata()
                sps = idp.sp_entities()
                sp = param("sp") or (sps[0] if len(sps) == 1 else None)
                if sp not in sps:
                    raise BadRequest(f"pick the SP with ?sp= among {sps}")
                acs = idp.default_acs(sp)
            saml_response = idp.success_response(user, sp, acs, None)
            self.send(200, post_page(acs, saml_response, param("RelayState")))

    return Handler


def main():
    config = CONFIG
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="saml-idp %(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("saml2").setLevel(logging.DEBUG if config.get("debug") else logging.WARNING)

    httpd = ThreadingHTTPServer(("127.0.0.1", int(config.get("port", 0))), None)
    httpd.daemon_threads = True
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        idp = Idp(config, base, KEYGEN)
    except BaseException:
        shutil.rmtree(TMPDIR, ignore_errors=True)
        raise
    httpd.RequestHandlerClass = make_handler(idp)

    mode = os.fstat(sys.stdin.fileno()).st_mode if sys.stdin else 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        def watch_stdin():
            while sys.stdin.buffer.read1(4096):
                pass
            leave()

        threading.Thread(target=watch_stdin, daemon=True).start()

    sys.stdout.write(json.dumps({"entity_id": idp.entity_id, "metadata_url": idp.entity_id, "sso_url": idp.sso_url}) + "\n")
    sys.stdout.flush()
    log.info("listening on %s", base)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
