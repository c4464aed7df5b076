#!/bin/sh
# The authorization code flow with PKCE against the demo, one request at a time: what an
# application does, and what the person's browser does in between. README, "Walkthrough".
# A test (`walkthrough::`) runs it against the demo configuration, so it stays true.
#
#   docs/walkthrough.sh [issuer]      # default http://localhost:8080; run `cargo run` first
#
# Needs curl and openssl.
set -eu

ISSUER=${1:-http://localhost:8080}
ISSUER=${ISSUER%/}
CLIENT_ID=demo-app
CLIENT_SECRET=demo-app-secret-change-me
REDIRECT_URI=http://localhost:3000/callback
JAR=$(mktemp)
trap 'rm -f "$JAR"' EXIT
trap 'exit 130' INT TERM

# A browser: keeps cookies in $JAR, follows no redirect, prints where it was sent.
browse() { curl -sS -o /dev/null -c "$JAR" -b "$JAR" -w '%{redirect_url}' "$@"; }
# One value out of a flat JSON object (enough for these responses; use jq in real scripts).
json() { sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"; }
# One query parameter out of a URL.
param() { printf '%s' "$2" | sed -n "s/.*[?&]$1=\\([^&]*\\).*/\\1/p"; }
# The payload of a JWT, decoded (not verified: a client library checks it against the JWKS).
jwt_payload() {
    payload=$(printf '%s' "$1" | cut -d. -f2 | tr '_-' '/+')
    while [ $((${#payload} % 4)) -ne 0 ]; do payload="$payload="; done
    printf '%s' "$payload" | openssl base64 -d -A
}
fail() { printf 'walkthrough: %s\n' "$*" >&2; exit 1; }

echo "1. The app makes a PKCE verifier and its S256 challenge, a state and a nonce."
VERIFIER=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
STATE=$(openssl rand -hex 16)
NONCE=$(openssl rand -hex 16)
echo "   code_challenge=$CHALLENGE"

echo "2. The browser opens the authorization URL; Gatehouse sends it to the sign-in page."
NEXT=$(browse -G "$ISSUER/oauth2/authorize" \
    -d response_type=code -d client_id=$CLIENT_ID --data-urlencode "redirect_uri=$REDIRECT_URI" \
    --data-urlencode "scope=openid profile email groups offline_access" \
    -d state="$STATE" -d nonce="$NONCE" -d code_challenge="$CHALLENGE" -d code_challenge_method=S256)
printf '   -> %s\n' "$NEXT"
case "$NEXT" in "$ISSUER/login"*) ;; *) fail "expected the sign-in page, got '$NEXT'" ;; esac

echo "3. alice signs in with her password; Gatehouse redirects to the app with a code."
PAGE=$(curl -sS -c "$JAR" -b "$JAR" "$NEXT")
CSRF=$(printf '%s' "$PAGE" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n 1)
REQ=$(printf '%s' "$PAGE" | sed -n 's/.*name="req" value="\([^"]*\)".*/\1/p' | head -n 1)
NEXT=$(browse "$ISSUER/login" --data-urlencode "csrf=$CSRF" --data-urlencode "req=$REQ" \
    -d connector=local -d username=alice -d password=alice-password)
HOPS=0
until case "$NEXT" in "$REDIRECT_URI"*) true ;; *) false ;; esac; do
    [ -n "$NEXT" ] && [ $HOPS -lt 5 ] || fail "the sign-in did not return to the app"
    NEXT=$(browse "$NEXT")
    HOPS=$((HOPS + 1))
done
printf '   -> %s\n' "$NEXT"
[ "$(param state "$NEXT")" = "$STATE" ] || fail "the state came back changed"
CODE=$(param code "$NEXT")

echo "4. The app redeems the code (with the verifier) at the token endpoint."
TOKENS=$(curl -sS -u "$CLIENT_ID:$CLIENT_SECRET" "$ISSUER/oauth2/token" -d grant_type=authorization_code \
    --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$REDIRECT_URI" -d code_verifier="$VERIFIER")
ACCESS_TOKEN=$(printf '%s' "$TOKENS" | json access_token)
REFRESH_TOKEN=$(printf '%s' "$TOKENS" | json refresh_token)
ID_TOKEN=$(printf '%s' "$TOKENS" | json id_token)
[ -n "$ACCESS_TOKEN" ] && [ -n "$REFRESH_TOKEN" ] && [ -n "$ID_TOKEN" ] || fail "no tokens: $TOKENS"
echo "   expires_in=$(printf '%s' "$TOKENS" | json expires_in) scope=$(printf '%s' "$TOKENS" | json scope)"
CLAIMS=$(jwt_payload "$ID_TOKEN")
printf '   ID token: %s\n' "$CLAIMS"
[ "$(printf '%s' "$CLAIMS" | json nonce)" = "$NONCE" ] || fail "the ID token carries another nonce"

echo "5. The app asks UserInfo with the access token."
USERINFO=$(curl -sS -H "Authorization: Bearer $ACCESS_TOKEN" "$ISSUER/oauth2/userinfo")
printf '   %s\n' "$USERINFO"
[ "$(printf '%s' "$USERINFO" | json preferred_username)" = alice ] || fail "UserInfo is not alice's"

echo "6. Later, the app refreshes: a new access token and a new refresh token (the old one is spent)."
TOKENS=$(curl -sS -u "$CLIENT_ID:$CLIENT_SECRET" "$ISSUER/oauth2/token" \
    -d grant_type=refresh_token --data-urlencode "refresh_token=$REFRESH_TOKEN")
NEW_REFRESH_TOKEN=$(printf '%s' "$TOKENS" | json refresh_token)
[ -n "$NEW_REFRESH_TOKEN" ] && [ "$NEW_REFRESH_TOKEN" != "$REFRESH_TOKEN" ] || fail "no new refresh token: $TOKENS"
echo "   new access token issued, refresh token rotated"

echo "7. On sign-out, the app revokes its refresh token: the grant and its tokens end."
STATUS=$(curl -sS -o /dev/null -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" "$ISSUER/oauth2/revoke" \
    --data-urlencode "token=$NEW_REFRESH_TOKEN" -d token_type_hint=refresh_token)
echo "   revocation answered $STATUS"
[ "$STATUS" = 200 ] || fail "revocation answered $STATUS"
AFTER=$(curl -sS -u "$CLIENT_ID:$CLIENT_SECRET" "$ISSUER/oauth2/token" \
    -d grant_type=refresh_token --data-urlencode "refresh_token=$NEW_REFRESH_TOKEN")
printf '   refreshing again: %s\n' "$AFTER"
[ "$(printf '%s' "$AFTER" | json error)" = invalid_grant ] || fail "a revoked refresh token still works"
echo "Done: code + PKCE, tokens, UserInfo, refresh and revocation all behaved as the README says."
