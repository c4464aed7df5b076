#!/usr/bin/env bash
# Seeds the fuzz corpora: the fixture and vendor responses, the IdP metadata fixtures, and
# hostile documents of the shapes in tests/it/hostile_saml.rs (so the fuzzer starts from large,
# costly inputs as well as valid ones).
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../tests/fixtures/saml
mkdir -p corpus/saml_response corpus/saml_c14n corpus/saml_metadata
cp "$fixtures"/responses/*.xml "$fixtures"/vendor/*.xml corpus/saml_response/
cp "$fixtures"/responses/*.xml "$fixtures"/vendor/*.xml corpus/saml_c14n/
cp "$fixtures"/keys/idp-metadata.xml corpus/saml_metadata/
python3 - <<'PY'
sig = lambda prefixes: ('<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
    '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
    '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#_h"><ds:Transforms>'
    '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
    '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces '
    f'xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="{prefixes}"/></ds:Transform></ds:Transforms>'
    '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AAAA</ds:DigestValue>'
    '</ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>')
doc = lambda attrs, body: (f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"{attrs} ID="_h" '
    f'Version="2.0" IssueInstant="2026-01-01T00:00:00Z">{body}</samlp:Response>')
seeds = {
    "quadratic-namespaces": doc("".join(f' xmlns:p{i}="urn:p"' for i in range(3500)), '<a xmlns="urn:d"/>' * 5500),
    "amplification": doc(f' xmlns="urn:{"L" * 100000}"', sig("#default") + "<x/>" * 9000),
    "prefix-list": doc("", sig(" ".join(f"p{i}" for i in range(20000))) + "<x/>" * 5000),
}
for target in ("saml_response", "saml_c14n"):
    for name, text in seeds.items():
        with open(f"corpus/{target}/hostile-{name}.xml", "w") as out:
            out.write(text)
PY
echo "seeded: $(ls corpus/saml_response | wc -l) responses, $(ls corpus/saml_c14n | wc -l) c14n, $(ls corpus/saml_metadata | wc -l) metadata"
