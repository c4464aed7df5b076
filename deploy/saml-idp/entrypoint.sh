#!/bin/sh
# Per container, not per image: the IdP's signing key and SimpleSAMLphp's secret salt. Then the
# SP metadata, kept fresh from its URL in the background, and Apache in the foreground.
set -eu
cert=/var/lib/simplesamlphp/cert
if [ ! -s "$cert/idp.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=Gatehouse demo SAML IdP" \
        -keyout "$cert/idp.key" -out "$cert/idp.crt" 2>/dev/null
    chown www-data:www-data "$cert/idp.key" "$cert/idp.crt"
    chmod 600 "$cert/idp.key"
fi
if [ ! -s "$cert/secrets.inc.php" ]; then
    printf "<?php\n\$config['secretsalt'] = '%s';\n\$config['auth.adminpassword'] = '%s';\n" \
        "$(openssl rand -hex 32)" "$(openssl rand -hex 16)" >"$cert/secrets.inc.php"
    chown www-data:www-data "$cert/secrets.inc.php"
    chmod 600 "$cert/secrets.inc.php"
fi

sp=/var/lib/simplesamlphp/sp-metadata
mkdir -p "$sp"
[ -s "$sp/sp.xml" ] || echo '<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata"/>' >"$sp/sp.xml"
# Every 2 s until the first success (the IdP is healthy only then), every 10 s after.
refresh_sp_metadata() {
    state=""
    while :; do
        if curl -fsS --max-time 5 -o "$sp/sp.xml.new" "${SP_METADATA_URL:?}" 2>/dev/null \
            && grep -q 'EntityDescriptor' "$sp/sp.xml.new"; then
            if ! cmp -s "$sp/sp.xml.new" "$sp/sp.xml"; then
                mv "$sp/sp.xml.new" "$sp/sp.xml"
                echo "saml-idp: SP metadata updated from $SP_METADATA_URL" >&2
            fi
            state=ok
        elif [ "$state" != failing ]; then
            echo "saml-idp: cannot read the SP metadata at $SP_METADATA_URL yet; retrying" >&2
            state=failing
        fi
        if [ "$state" = ok ]; then sleep "${SP_METADATA_REFRESH_SECS:-10}"; else sleep 2; fi
    done
}
refresh_sp_metadata &
exec "$@"
