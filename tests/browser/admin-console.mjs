// The admin console as a person uses it, in Chromium: alice (an admin) creates an application
// and copies its one-time secret; a certified relying party library (openid-client) signs bob
// into that new application at once; alice ends bob's session (his refresh token is refused and
// the application gets a back-channel logout), disables him, rotates the signing keys and finds
// it all in the audit log. bob is refused the console.
// Usage: node admin-console.mjs <issuer-url> <chromium-path> <app-port> [screenshot-dir]
import { once } from 'node:events';
import { createServer } from 'node:http';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';

const [base, executablePath, appPort, screenshots] = process.argv.slice(2);
const appOrigin = `http://127.0.0.1:${appPort}`;
const TIMEOUT_MS = 30_000;
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

// The new application's side: its redirect URI and its back-channel logout endpoint.
const callbacks = [];
const logoutTokens = [];
const server = createServer((request, response) => {
  const url = new URL(request.url, appOrigin);
  if (url.pathname === '/callback') {
    callbacks.push(url);
    response.writeHead(200, { 'content-type': 'text/plain' });
    response.end('signed in');
  } else if (url.pathname === '/backchannel' && request.method === 'POST') {
    let body = '';
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      logoutTokens.push(new URLSearchParams(body).get('logout_token'));
      response.writeHead(200);
      response.end();
    });
  } else {
    response.writeHead(url.pathname === '/favicon.ico' ? 204 : 404);
    response.end();
  }
});
server.listen(Number(appPort), '127.0.0.1');
await once(server, 'listening');

async function shoot(page, name) {
  if (!screenshots) return;
  await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}

async function signIn(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

const section = (page, name) => page.getByRole('navigation', { name: 'Admin sections' }).getByRole('link', { name }).click();

const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: TIMEOUT_MS,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const consoleErrors = [];
try {
  const aliceContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  aliceContext.setDefaultTimeout(TIMEOUT_MS);
  const alice = await aliceContext.newPage();
  alice.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  alice.on('pageerror', (e) => consoleErrors.push(String(e)));

  // The console sends an anonymous visitor through sign-in and back.
  await alice.goto(`${base}/admin`);
  check(new URL(alice.url()).pathname === '/login', `an anonymous visit to /admin lands on /login (${alice.url()})`);
  check((await alice.locator('main').innerText()).includes('the admin console'), 'the login page says it is for the admin console');
  await signIn(alice, 'alice', 'alice-password');
  await alice.waitForURL(`${base}/admin`);
  check(await alice.getByRole('heading', { level: 1, name: 'Overview' }).isVisible(), 'alice sees the overview');
  await shoot(alice, 'admin-overview');

  // A new application; its secret is shown once.
  await section(alice, 'Applications');
  await shoot(alice, 'admin-applications');
  await alice.getByRole('link', { name: 'New application' }).click();
  await shoot(alice, 'admin-application-form');
  await alice.getByLabel('Name', { exact: true }).fill('Team Wiki');
  await alice.getByLabel('Client ID', { exact: true }).fill('wiki');
  await alice.getByLabel('Redirect URIs', { exact: true }).fill(`${appOrigin}/callback`);
  await alice.getByLabel('Scopes', { exact: true }).fill('openid profile email offline_access');
  await alice.getByLabel('Refresh token', { exact: true }).check();
  await alice.getByLabel(/First-party/).check();
  await alice.getByText('Advanced').click();
  await alice.getByLabel('Back-channel logout URI').fill(`${appOrigin}/backchannel`);
  await shoot(alice, 'admin-application-form');
  await alice.getByRole('button', { name: 'Create application' }).click();
  await alice.waitForLoadState();
  const secretField = alice.getByLabel(/Client secret: copy it now/);
  const secret = await secretField.inputValue();
  check(secret.length >= 32, 'the new application\'s secret is shown');
  await shoot(alice, 'admin-application-created');
  await alice.goto(`${base}/admin/clients/wiki`);
  check(!(await alice.content()).includes(secret), 'the secret is not shown again');
  check((await alice.locator('#summary').innerText()).includes('/.well-known/openid-configuration'), 'the developer summary has the discovery URL');

  // bob is no admin; then openid-client signs him into the new application, no restart.
  const bobContext = await browser.newContext({ viewport: { width: 390, height: 844 } });
  bobContext.setDefaultTimeout(TIMEOUT_MS);
  const bob = await bobContext.newPage();
  const config = await client.discovery(new URL(base), 'wiki', { id_token_signed_response_alg: 'ES256' },
    client.ClientSecretBasic(secret), { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks], timeout: 30 });
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: `${appOrigin}/callback`, scope: 'openid profile email offline_access',
    code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce,
  });
  await bob.goto(authorizationUrl.href);
  await signIn(bob, 'bob', 'bob-password');
  await bob.waitForURL((url) => url.origin === appOrigin && url.pathname === '/callback');
  const tokens = await client.authorizationCodeGrant(config, callbacks.at(-1),
    { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
  check(tokens.claims().preferred_username === 'bob', 'the new application signed bob in');
  check(typeof tokens.refresh_token === 'string', 'the new application got a refresh token');
  const bobSid = tokens.claims().sid;

  const refused = await bob.goto(`${base}/admin`);
  check(refused.status() === 403, `bob gets 403 at the console (got ${refused.status()})`);
  check((await bob.locator('main').innerText()).includes('not allowed to use the admin console'), 'bob is told why');
  await shoot(bob, 'admin-forbidden-phone');

  // alice ends bob's session: his refresh token stops working and the app is told.
  await section(alice, 'Sessions');
  const bobRow = alice.getByRole('row').filter({ hasText: 'bob' });
  check(await bobRow.count() === 1, 'bob\'s session is listed');
  await shoot(alice, 'admin-sessions');
  await bobRow.getByRole('link', { name: 'End…' }).click();
  check((await alice.locator('main').innerText()).includes('back-channel logout'), 'the confirmation says what ending does');
  await shoot(alice, 'admin-confirm-end-session');
  await alice.getByRole('button', { name: 'End session' }).click();
  await alice.waitForURL(`${base}/admin/sessions`);
  check(await alice.getByRole('row').filter({ hasText: 'bob' }).count() === 0, 'bob\'s session is gone from the list');
  let refreshError = 'no error';
  try { await client.refreshTokenGrant(config, tokens.refresh_token); } catch (error) { refreshError = error.error ?? String(error); }
  check(refreshError === 'invalid_grant', `bob's refresh token is refused (got ${refreshError})`);
  for (let i = 0; i < 100 && logoutTokens.length === 0; i += 1) await new Promise((r) => setTimeout(r, 100));
  check(logoutTokens.length === 1, `one back-channel logout reached the application (got ${logoutTokens.length})`);
  if (logoutTokens[0]) {
    const claims = payload(logoutTokens[0]);
    check(claims.sid === bobSid, 'the logout token names bob\'s session');
    check(claims.events?.['http://schemas.openid.net/event/backchannel-logout'] !== undefined, 'the logout token carries the back-channel logout event');
  }

  // Disable bob.
  await section(alice, 'Users');
  await alice.getByLabel('Search by username, email or name').fill('bob');
  await alice.getByRole('button', { name: 'Search' }).click();
  await shoot(alice, 'admin-users');
  await alice.getByRole('link', { name: 'bob', exact: true }).click();
  await alice.getByRole('link', { name: 'Disable…' }).click();
  await shoot(alice, 'admin-confirm-disable');
  await alice.getByRole('button', { name: 'Disable user' }).click();
  await alice.waitForLoadState();
  check(await alice.getByRole('heading', { level: 1 }).innerText() === 'bob Disabled', 'bob\'s page shows him disabled');
  await shoot(alice, 'admin-user');

  // Rotate the signing keys.
  await section(alice, 'Signing keys');
  const keysBefore = await alice.getByRole('row').count();
  await alice.getByRole('button', { name: 'Rotate keys now' }).click();
  await alice.waitForURL(`${base}/admin/keys`);
  check(await alice.getByRole('row').count() === keysBefore + 1, 'a new key is listed after rotation');
  await shoot(alice, 'admin-keys');

  await alice.getByRole('row').filter({ hasText: 'retired' }).getByRole('link', { name: 'Retire now…' }).click();
  check((await alice.locator('main').innerText()).includes('stops verifying'), 'retiring a key early warns which tokens stop verifying');
  await shoot(alice, 'admin-confirm-retire-key');
  await alice.getByRole('link', { name: 'Cancel' }).click();

  // A token found where it should not be: pasted, identified, revoked.
  await section(alice, 'Grants');
  await alice.getByLabel('Access token or refresh token').fill(tokens.access_token);
  await alice.getByRole('button', { name: 'Revoke token' }).click();
  await alice.waitForLoadState();
  const notice = await alice.locator('#revoked').innerText();
  check(notice.includes('an access token of wiki'), `the revoked token is described (${notice})`);
  await shoot(alice, 'admin-grants');

  // A new secret for the wiki, with a day's overlap, behind a confirmation.
  await alice.goto(`${base}/admin/clients/wiki`);
  await alice.getByLabel('Keep the old secret working for (hours)').fill('24');
  await alice.getByRole('button', { name: 'Rotate secret…' }).click();
  check((await alice.locator('main').innerText()).includes('keeps working for 24 hours'), 'the rotation says how long the old secret works');
  await shoot(alice, 'admin-confirm-rotate-secret');
  await alice.getByRole('button', { name: 'Rotate secret' }).click();
  await alice.waitForLoadState();
  const rotated = await alice.getByLabel(/Client secret: copy it now/).inputValue();
  check(rotated.length >= 32 && rotated !== secret, 'the new secret is shown once');
  check((await alice.locator('main').innerText()).includes('Previous secret'), 'the page says until when the old secret works');

  // The audit log has it all.
  await section(alice, 'Audit log');
  const log = await alice.locator('#audit').innerText();
  for (const kind of ['admin.client_created', 'token_granted', 'admin.session_ended', 'admin.user_disabled', 'admin.keys_rotated']) {
    check(log.includes(kind), `the audit log lists ${kind}`);
  }
  check(!log.includes(secret), 'the audit log holds no secret');
  await shoot(alice, 'admin-audit');
  await alice.getByLabel('Event').selectOption('admin.user_disabled');
  await alice.getByRole('button', { name: 'Filter' }).click();
  check(await alice.locator('#audit tbody tr').count() === 1, 'filtering by event leaves one row');

  // The same pages at phone width.
  await alice.setViewportSize({ width: 390, height: 844 });
  for (const [path, name] of [['/admin', 'admin-overview-phone'], ['/admin/clients/wiki', 'admin-application-phone'], ['/admin/audit', 'admin-audit-phone']]) {
    await alice.goto(`${base}${path}`);
    const overflow = await alice.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `${path} fits a phone's width (overflows by ${overflow}px)`);
    await shoot(alice, name);
  }
  check(consoleErrors.length === 0, `no browser console errors (${consoleErrors.join('; ')})`);
} catch (error) {
  failures.push(`the run stopped: ${error?.stack ?? error}`);
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ ok: failures.length === 0, failures }));
process.exit(failures.length === 0 ? 0 : 1);
