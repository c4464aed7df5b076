// Runs a complete OpenID Connect flow against Gatehouse with a certified third-party relying party
// library (openid-client), with Chromium as the user's browser.
// Usage: node oidc-interop.mjs <issuer-url> <chromium-path> <callback-port>
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';

const [issuerArg, executablePath, callbackPort] = process.argv.slice(2);
if (!issuerArg || !executablePath || !callbackPort) {
  console.error('usage: node oidc-interop.mjs <issuer-url> <chromium-path> <callback-port>');
  process.exit(2);
}

// These must match the client the server under test was configured with.
const CLIENT_ID = 'interop-app';
const CLIENT_SECRET = 'interop-app-secret-123456';
const SCOPE = 'openid profile email groups offline_access';
const callbackOrigin = `http://127.0.0.1:${callbackPort}`;
const redirectUri = `${callbackOrigin}/callback`;
const postLogoutRedirectUri = `${callbackOrigin}/signed-out`;
const TIMEOUT_MS = 30_000;

const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
let steps = 0;
let currentStep = 'start-up';

// Runs one step of the flow; a throw ends the run and is reported against the step's name.
async function step(name, body) {
  currentStep = name;
  const result = await body();
  steps += 1;
  return result;
}

// One line about an error, with the OAuth error code or the library's reason and its details.
function describe(error) {
  const parts = [String(error)];
  if (error?.code) parts.push(`code ${error.code}`);
  if (error?.error) parts.push(`OAuth error ${error.error}${error.error_description ? ` (${error.error_description})` : ''}`);
  const cause = error?.cause;
  if (cause instanceof Response) parts.push(`HTTP ${cause.status} from ${cause.url}`);
  else if (cause instanceof Error) parts.push(`cause: ${describe(cause)}`);
  else if (cause?.constructor === Object || Array.isArray(cause)) {
    parts.push(`details: ${JSON.stringify(cause, (_, value) => (ArrayBuffer.isView(value) ? `<${value.byteLength} bytes>` : value))}`);
  }
  return parts.join('; ');
}

// The OAuth error code a token request was refused with, or what happened instead.
async function refusal(request) {
  try {
    await request;
    return 'no error';
  } catch (error) {
    return error instanceof client.ResponseBodyError ? error.error : describe(error);
  }
}

function jwtHeader(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString());
  } catch {
    return undefined;
  }
}

// OIDC Core 3.1.3.6: the left half of the access token's hash, with the hash of the ID token's
// alg (SHA-256 for ES256). openid-client does not check at_hash in the code flow, so we do.
const atHash = (accessToken) => createHash('sha256').update(accessToken).digest().subarray(0, 16).toString('base64url');

// The relying party's redirect targets: remember exactly what the browser delivered.
const received = [];
const server = createServer((request, response) => {
  const url = new URL(request.url, callbackOrigin);
  if (url.pathname === '/callback' || url.pathname === '/signed-out') {
    received.push(url);
    response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    response.end(url.pathname === '/callback' ? 'Signed in; the relying party has the code.\n' : 'Signed out.\n');
  } else {
    // 204 rather than 404 so Chromium's favicon request cannot surface as a console error.
    response.writeHead(url.pathname === '/favicon.ico' ? 204 : 404);
    response.end();
  }
});
server.listen(Number(callbackPort), '127.0.0.1');
await once(server, 'listening');

// Waits until the browser has loaded a page of the callback server (so the server has recorded
// the request) and returns the URL the server received, counting only requests after `seen`.
async function arrivedAt(page, pathname, seen) {
  await page.waitForURL((url) => url.origin === callbackOrigin && url.pathname === pathname);
  const url = received.slice(seen).find((hit) => hit.pathname === pathname);
  if (!url) throw new Error(`the browser shows ${pathname} but the callback server did not receive it`);
  return url;
}

const onLoginPage = (page, issuer) => {
  const url = new URL(page.url());
  return url.origin === new URL(issuer).origin && url.pathname === '/login';
};

// Sends the browser to the authorization endpoint with fresh PKCE, state and nonce; returns
// the checks the relying party keeps for the callback and how many requests came before it.
async function beginAuthorization(config, page) {
  const pkceCodeVerifier = client.randomPKCECodeVerifier();
  const expectedState = client.randomState();
  const expectedNonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
    code_challenge_method: 'S256',
    state: expectedState,
    nonce: expectedNonce,
  });
  const seen = received.length;
  await page.goto(url.href);
  return { seen, checks: { pkceCodeVerifier, expectedState, expectedNonce, idTokenExpected: true } };
}

// A whole authorization code flow: the browser signs in only if the server asks it to, and the
// code it brings back is exchanged. Returns the validated token endpoint response.
async function authorize(config, page, expectLogin) {
  const { issuer } = config.serverMetadata();
  const { seen, checks } = await beginAuthorization(config, page);
  const login = onLoginPage(page, issuer);
  check(login === expectLogin, `the authorization request ${expectLogin ? 'shows' : 'skips'} the login page (browser at ${page.url()})`);
  if (login) {
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill('alice-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
  }
  const callback = await arrivedAt(page, '/callback', seen);
  check(callback.searchParams.get('iss') === issuer, `the callback carries iss=${issuer} (got ${callback.searchParams.get('iss')})`);
  check(callback.searchParams.get('state') === checks.expectedState, 'the callback carries the state that was sent');
  return client.authorizationCodeGrant(config, callback, checks);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: TIMEOUT_MS,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
// Kept outside the flow so a console error that explains a failed step is still reported.
const consoleErrors = [];
try {
  const context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));

  const { config, tokens: first } = await step('1. discovery, sign-in and code exchange', async () => {
    const config = await client.discovery(
      new URL(issuerArg),
      CLIENT_ID,
      // The server signs with ES256; pinning it makes the library refuse any other alg.
      { id_token_signed_response_alg: 'ES256' },
      client.ClientSecretBasic(CLIENT_SECRET),
      // The issuer is plain http in tests. Non-repudiation checks make the library verify
      // ID token signatures against the JWKS instead of trusting the TLS channel.
      { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks], timeout: TIMEOUT_MS / 1000 },
    );
    const tokens = await authorize(config, page, true);
    const claims = tokens.claims();
    check(typeof claims.sub === 'string' && claims.sub !== '' && claims.sub !== 'alice@example.com',
      `sub is a non-empty identifier other than the email (got ${claims.sub})`);
    check(claims.email === 'alice@example.com', `the ID token has the email (got ${claims.email})`);
    check(typeof claims.email_verified === 'boolean', `email_verified is a boolean (got ${claims.email_verified})`);
    check(claims.name === 'Alice Example', `the ID token has the name (got ${claims.name})`);
    check(claims.preferred_username === 'alice', `the ID token has preferred_username (got ${claims.preferred_username})`);
    check(typeof claims.updated_at === 'number', `updated_at is a number (got ${claims.updated_at})`);
    check(claims.idp === 'local', `idp is "local" (got ${claims.idp})`);
    check(typeof claims.sid === 'string' && claims.sid !== '', 'the ID token has a sid');
    check(Array.isArray(claims.amr) && claims.amr.length > 0, `amr is a non-empty array (got ${JSON.stringify(claims.amr)})`);
    check(typeof claims.auth_time === 'number', `auth_time is a number (got ${claims.auth_time})`);
    check(Array.isArray(claims.groups) && claims.groups.includes('engineering'), `groups is an array with engineering (got ${JSON.stringify(claims.groups)})`);
    check(claims.at_hash === atHash(tokens.access_token), 'at_hash matches the access token');
    check(typeof tokens.refresh_token === 'string' && tokens.refresh_token !== '', 'offline_access yields a refresh token');
    check(tokens.access_token.split('.').length === 3 && jwtHeader(tokens.access_token)?.typ === 'at+jwt',
      `the access token is a JWT with typ at+jwt (header ${JSON.stringify(jwtHeader(tokens.access_token))})`);
    return { config, tokens };
  });
  const { sub, sid } = first.claims();

  await step('2. userinfo', async () => {
    const userinfo = await client.fetchUserInfo(config, first.access_token, sub);
    check(userinfo.email === 'alice@example.com', `userinfo has the email (got ${userinfo.email})`);
    check(userinfo.name === 'Alice Example', `userinfo has the name (got ${userinfo.name})`);
    check(Array.isArray(userinfo.groups) && userinfo.groups.includes('engineering'), `userinfo groups is an array with engineering (got ${JSON.stringify(userinfo.groups)})`);
  });

  const refreshed = await step('3. refresh', async () => {
    const refreshed = await client.refreshTokenGrant(config, first.refresh_token);
    check(typeof refreshed.refresh_token === 'string' && refreshed.refresh_token !== first.refresh_token,
      'refreshing rotates the refresh token');
    const claims = refreshed.claims();
    check(claims === undefined || claims.sub === sub, 'an ID token from a refresh keeps the sub');
    await client.fetchUserInfo(config, refreshed.access_token, sub);
    return refreshed;
  });

  await step('4. introspection', async () => {
    const access = await client.tokenIntrospection(config, refreshed.access_token);
    check(access.active === true, 'the refreshed access token introspects as active');
    check(access.client_id === CLIENT_ID, `introspection names the client (got ${access.client_id})`);
    check(access.sub === sub, `introspection names the subject (got ${access.sub})`);
    const refresh = await client.tokenIntrospection(config, refreshed.refresh_token);
    check(refresh.active === true, 'the current refresh token introspects as active');
  });

  await step('5. revocation', async () => {
    await client.tokenRevocation(config, refreshed.refresh_token);
    const refresh = await client.tokenIntrospection(config, refreshed.refresh_token);
    check(refresh.active === false, 'a revoked refresh token introspects as inactive');
    const access = await client.tokenIntrospection(config, refreshed.access_token);
    check(access.active === false, 'revoking a refresh token deactivates the access tokens of its family');
  });

  await step('6. refresh token reuse', async () => {
    const second = await authorize(config, page, false);
    const rotated = await client.refreshTokenGrant(config, second.refresh_token);
    check(rotated.refresh_token !== second.refresh_token, 'the second family rotates too');
    const reuse = await refusal(client.refreshTokenGrant(config, second.refresh_token));
    check(reuse === 'invalid_grant', `presenting a rotated refresh token is refused with invalid_grant (got ${reuse})`);
    const newest = await refusal(client.refreshTokenGrant(config, rotated.refresh_token));
    check(newest === 'invalid_grant', `after reuse the newest refresh token of the family is refused too (got ${newest})`);
    const access = await client.tokenIntrospection(config, rotated.access_token);
    check(access.active === false, 'after reuse the family\'s access tokens introspect as inactive');
  });

  // Reuse ended the SSO session, so the browser has to sign in again.
  const third = await step('7. sign-in after reuse', async () => {
    const third = await authorize(config, page, true);
    check(third.claims().sid !== sid, 'the new sign-in has a new sid');
    return third;
  });

  await step('8. RP-initiated logout', async () => {
    const state = client.randomState();
    const seen = received.length;
    await page.goto(client.buildEndSessionUrl(config, {
      id_token_hint: third.id_token,
      post_logout_redirect_uri: postLogoutRedirectUri,
      state,
    }).href);
    const signedOut = await arrivedAt(page, '/signed-out', seen);
    check(signedOut.searchParams.get('state') === state, 'logout returns to the client with its state');
    const refresh = await client.tokenIntrospection(config, third.refresh_token);
    check(refresh.active === false, 'logout revokes the session\'s refresh tokens');
    await beginAuthorization(config, page);
    check(onLoginPage(page, config.serverMetadata().issuer), `after logout the authorization request shows the login page (browser at ${page.url()})`);
  });
} catch (error) {
  failures.push(`${currentStep} stopped: ${describe(error)}`);
} finally {
  await browser.close();
  server.closeAllConnections();
  server.close();
}
check(consoleErrors.length === 0, `no console errors or CSP violations: ${JSON.stringify(consoleErrors)}`);
if (failures.length > 0) {
  console.error(JSON.stringify({ failures, steps }));
  process.exit(1);
}
console.log(JSON.stringify({ ok: true, steps }));
