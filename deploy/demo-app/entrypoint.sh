#!/bin/sh
# The client secret comes from a Docker secret; the session-cookie key is new at each start.
set -eu
OIDC_CLIENT_SECRET=$(cat "${OIDC_CLIENT_SECRET_FILE:?OIDC_CLIENT_SECRET_FILE is required}")
OIDC_CRYPTO_PASSPHRASE=$(openssl rand -hex 32)
export OIDC_CLIENT_SECRET OIDC_CRYPTO_PASSPHRASE
exec "$@"
