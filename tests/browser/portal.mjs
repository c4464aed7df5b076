// The employee portal and the access policy as people use them, in Chromium. Two applications
// are real relying parties here (openid-client) that support OpenID Connect third-party-initiated
// login: alice signs in once and opens both from the portal without being asked again; bob, who
// is not in the payroll group, gets the access page and Payroll gets `access_denied`; dave opens
// Payroll and hands his refresh token back (the Rust side then takes him out of the group and
// refreshes); alice signs out everywhere from one browser and her other browser is signed out;
// email-first sign-in sends someone@corp.example to the corporate provider (a real one) and the
// browser remembers that choice.
// Usage: node portal.mjs <issuer-url> <chromium-path> <app-port> <upstream-issuer> [screenshot-dir]
import { once } from 'node:events';
import { createServer } from 'node:http';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';

const [base, executablePath, appPort, upstreamIssuer, screenshots] = process.argv.slice(2);
const appOrigin = `http://127.0.0.1:${appPort}`;
const TIMEOUT_MS = 30_000;
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
const SECRETS = { wiki: 'wiki-secret-0123456789', payroll: 'payroll-secret-0123456789' };
const SCOPES = { wiki: 'openid profile email', payroll: 'openid profile groups offline_access' };

// The applications: `/<app>/login` starts a sign-in (the portal's tiles point there), and
// `/<app>/callback` finishes it, showing who is signed in or the error the broker sent.
const configs = {};
const started = new Map();
const results = { wiki: [], payroll: [] };
async function rp(app) {
  configs[app] ??= await client.discovery(new URL(base), app, { id_token_signed_response_alg: 'ES256' },
    client.ClientSecretBasic(SECRETS[app]), { execute: [client.allowInsecureRequests], timeout: 30 });
  return configs[app];
}
async function handle(request, response) {
  const url = new URL(request.url, appOrigin);
  const [, app, step] = url.pathname.split('/');
  if (!(app in SECRETS)) {
    response.writeHead(url.pathname === '/favicon.ico' ? 204 : 404);
    return response.end();
  }
  const config = await rp(app);
  if (step === 'login') {
    // Third-party-initiated login: only from the issuer this app trusts.
    if (url.searchParams.get('iss') !== base) {
      response.writeHead(400);
      return response.end('unexpected issuer');
    }
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    started.set(state, { verifier, nonce });
    const parameters = {
      redirect_uri: `${appOrigin}/${app}/callback`, scope: SCOPES[app], state, nonce,
      code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    };
    const hint = url.searchParams.get('login_hint');
    if (hint) parameters.login_hint = hint;
    response.writeHead(302, { location: client.buildAuthorizationUrl(config, parameters).href });
    return response.end();
  }
  if (step === 'callback') {
    const state = url.searchParams.get('state');
    const flow = started.get(state);
    let text;
    if (!flow) {
      text = `${app}: unknown state`;
    } else if (url.searchParams.get('error')) {
      results[app].push({ error: url.searchParams.get('error'), stateKnown: true });
      text = `${app}: ${url.searchParams.get('error')}`;
    } else {
      const tokens = await client.authorizationCodeGrant(config, url,
        { pkceCodeVerifier: flow.verifier, expectedState: state, expectedNonce: flow.nonce, idTokenExpected: true });
      results[app].push({ tokens, claims: tokens.claims() });
      text = `Signed in to ${app} as ${tokens.claims().preferred_username}`;
    }
    started.delete(state);
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    return response.end(`<!doctype html><title>${app}</title><p id="result">${text}</p>`);
  }
  response.writeHead(404);
  return response.end();
}
const server = createServer((request, response) => {
  handle(request, response).catch((error) => {
    failures.push(`the application failed: ${error?.stack ?? error}`);
    response.writeHead(500);
    response.end();
  });
});
server.listen(Number(appPort), '127.0.0.1');
await once(server, 'listening');

async function shoot(page, name) {
  if (!screenshots) return;
  await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}

async function fitsPhone(page, what) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${what} fits a phone's width (overflows by ${overflow}px)`);
}

/// Email-first sign-in of a local user: the username, then the password form.
async function signIn(page, username, password) {
  await page.getByLabel('Email address').fill(username);
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/`);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: TIMEOUT_MS,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const consoleErrors = [];
async function open(viewport) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  // A refusal page's own 403 (and the upstream provider's missing favicon) are expected; script,
  // CSP and markup errors are not.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  return page;
}
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const output = {};
try {
  // alice: one sign-in, then both apps from the portal without being asked again.
  const alice = await open(DESKTOP);
  await alice.goto(`${base}/`);
  check(new URL(alice.url()).pathname === '/login', 'the portal sends a stranger to sign in');
  check(await alice.getByLabel('Email address').isVisible(), 'the login page asks for an email address first');
  check(!(await alice.getByLabel('Password').isVisible()), 'no password field before the address is known');
  await shoot(alice, 'login-email-first');
  await alice.getByLabel('Email address').fill('alice');
  await alice.getByRole('button', { name: 'Continue' }).click();
  check(await alice.getByLabel('Username or email').inputValue() === 'alice', 'the password form keeps what was typed');
  await shoot(alice, 'login-password');
  await alice.getByLabel('Password').fill('alice-password');
  await alice.getByRole('button', { name: 'Sign in' }).click();
  await alice.waitForURL(`${base}/`);
  await shoot(alice, 'portal');
  // Keyboard: Tab reaches the first tile (after the header's button and the section links).
  let focused = '';
  for (let i = 0; i < 10 && !focused.startsWith('Payroll'); i += 1) {
    await alice.keyboard.press('Tab');
    focused = await alice.evaluate(() => document.activeElement?.innerText ?? '');
  }
  check(focused.startsWith('Payroll'), `Tab reaches the Payroll tile (focused: ${focused})`);
  const outline = await alice.evaluate(() => getComputedStyle(document.activeElement).boxShadow);
  check(outline !== 'none', 'the focused tile is visibly marked');
  // Without the stylesheet the page still reads in order.
  const unstyled = await alice.context().newPage();
  await unstyled.route('**/gatehouse.css', (route) => route.abort());
  await unstyled.goto(`${base}/`);
  const plain = await unstyled.locator('#apps').innerText();
  check(/Payroll\s*–\s*Payslips and expenses/.test(plain), `tiles read as "name – description" without the stylesheet (${plain})`);
  await shoot(unstyled, 'portal-unstyled');
  await unstyled.close();
  const tiles = await alice.locator('#app-tiles').innerText();
  check(tiles.includes('Team Wiki') && tiles.includes('Payroll'), `alice's launcher shows both apps (${tiles})`);
  const loginVisits = [];
  alice.on('framenavigated', (frame) => { if (new URL(frame.url()).pathname.startsWith('/login')) loginVisits.push(frame.url()); });
  for (const [name, app] of [['Team Wiki', 'wiki'], ['Payroll', 'payroll']]) {
    await alice.getByRole('link', { name: new RegExp(name) }).click();
    await alice.waitForURL((url) => url.origin === appOrigin && url.pathname === `/${app}/callback`);
    const shown = await alice.locator('#result').innerText();
    check(shown === `Signed in to ${app} as alice`, `${app} opened from the portal signs alice in (${shown})`);
    await alice.goto(`${base}/`);
  }
  check(loginVisits.length === 0, `opening two apps asked alice to sign in again (${loginVisits.join(', ')})`);
  const payrollClaims = results.payroll.at(-1)?.claims ?? {};
  check(JSON.stringify(payrollClaims.groups) === '["payroll"]', `Payroll is told only the payroll groups (${JSON.stringify(payrollClaims.groups)})`);
  output.aliceWikiSid = results.wiki.at(-1)?.claims?.sid;
  const alicePayrollRefresh = results.payroll.at(-1)?.tokens?.refresh_token;

  // bob is not in the payroll group.
  const bob = await open(PHONE);
  await bob.goto(`${base}/login`);
  await signIn(bob, 'bob', 'bob-password');
  const bobTiles = await bob.locator('#app-tiles').innerText();
  check(bobTiles.includes('Team Wiki') && !bobTiles.includes('Payroll'), `bob's launcher has no Payroll (${bobTiles})`);
  await fitsPhone(bob, 'the portal');
  await shoot(bob, 'portal-phone');
  await bob.goto(`${appOrigin}/payroll/login?iss=${encodeURIComponent(base)}`);
  const deniedText = await bob.locator('main').innerText();
  check(deniedText.includes("You don't have access to Payroll"), `bob is told he has no access (${deniedText})`);
  check(deniedText.includes('Ask your administrator for the payroll group.'), 'bob is told which group to ask for');
  await fitsPhone(bob, 'the access page');
  await shoot(bob, 'access-denied-phone');
  await bob.getByRole('link', { name: 'Return to Payroll' }).click();
  await bob.waitForURL((url) => url.origin === appOrigin);
  check(await bob.locator('#result').innerText() === 'payroll: access_denied', 'Payroll gets access_denied with its state');
  check(results.payroll.at(-1)?.error === 'access_denied', 'the application saw the error');

  // dave opens Payroll; his refresh token goes to the Rust side, which takes him out of the group.
  const dave = await open(DESKTOP);
  await dave.goto(`${base}/login`);
  await signIn(dave, 'dave', 'carol-password');
  await dave.getByRole('link', { name: /Payroll/ }).click();
  await dave.waitForURL((url) => url.origin === appOrigin);
  check(await dave.locator('#result').innerText() === 'Signed in to payroll as dave', 'dave opens Payroll');
  output.daveRefreshToken = results.payroll.at(-1)?.tokens?.refresh_token;

  // alice on her phone too; then "sign out everywhere" from the desktop.
  const alicePhone = await open(PHONE);
  await alicePhone.goto(`${base}/login`);
  await signIn(alicePhone, 'alice', 'alice-password');
  await alice.goto(`${base}/`);
  const sessions = alice.locator('#session-list > li');
  check(await sessions.count() === 2, `alice's two sessions are listed (${await sessions.count()})`);
  check(await alice.locator('#session-list > li[data-this-device]').count() === 1, 'one is marked as this device');
  check((await alice.locator('#session-list').innerText()).includes('Chrome on Linux'), 'the device is named from its user agent');
  await shoot(alice, 'portal-sessions');
  await alice.getByRole('button', { name: 'Sign out everywhere' }).click();
  await alice.waitForLoadState();
  check((await alice.locator('main').innerText()).includes('signed out of Gatehouse on 2 devices'), 'the page says both devices are signed out');
  await shoot(alice, 'signed-out-everywhere');
  await alicePhone.goto(`${base}/`);
  check(new URL(alicePhone.url()).pathname === '/login', `alice's phone is signed out (${alicePhone.url()})`);
  let refreshError = 'no error';
  try { await client.refreshTokenGrant(await rp('payroll'), alicePayrollRefresh); } catch (error) { refreshError = error.error ?? String(error); }
  check(refreshError === 'invalid_grant', `alice's payroll refresh token is revoked (${refreshError})`);

  // Bad input on the email step: the form again, with a message.
  const someone = await open(DESKTOP);
  await someone.goto(`${base}/login`);
  await someone.getByLabel('Email address').fill('two words@corp.example');
  await someone.getByRole('button', { name: 'Continue' }).click();
  check((await someone.getByRole('alert').innerText()).includes('not an email address or username'), 'a malformed address gets a clear message');
  await shoot(someone, 'login-email-error');
  await someone.getByRole('link', { name: 'Other ways to sign in' }).click();
  check(await someone.getByRole('link', { name: 'Sign in with Corp Login' }).isVisible(), '"Other ways to sign in" lists the providers');
  check(await someone.getByLabel('Password').isVisible(), '…and the local password form');
  await shoot(someone, 'login-choices');
  await someone.goto(`${base}/login`);

  // Email-first: a corporate address goes to the corporate provider, with the address as hint.
  // The page in between moves on at once; its HTML, fetched alone, is rendered to be looked at.
  const csrf = await someone.locator('input[name=csrf]').first().inputValue();
  const between = await (await someone.context().request.post(`${base}/login/identify`,
    { form: { csrf, identifier: 'alice@corp.example' }, maxRedirects: 0 })).text();
  check(/<meta http-equiv="refresh" content="0;url=\/oidc\/corp\/login\?req=[\w-]+">/.test(between), 'the page in between moves on by itself');
  check(between.includes('Continuing to Corp Login') && between.includes('id="continue"'), 'and names the provider, with a link');
  const still = await someone.context().newPage();
  await still.setContent(between.replace(/<meta http-equiv="refresh"[^>]*>/, '').replace('<head>', `<head><base href="${base}/">`));
  await shoot(still, 'login-continuing');
  await still.close();
  await someone.getByLabel('Email address').fill('alice@corp.example');
  await someone.getByRole('button', { name: 'Continue' }).click();
  await someone.waitForURL((url) => url.href.startsWith(`${upstreamIssuer}/interaction/`), { timeout: 10_000 })
    .catch(async (error) => { throw new Error(`${error.message}; at ${someone.url()}: ${await someone.locator('body').innerText()}`); });
  check(await someone.locator('input[name=login]').inputValue() === 'alice@corp.example', 'the provider received the address as login_hint');
  await someone.locator('input[name=login]').fill('alice-7f3a');
  await someone.getByRole('button', { name: 'Sign in' }).click();
  await someone.getByRole('button', { name: 'Allow' }).click();
  await someone.waitForURL(`${base}/`);
  check((await someone.locator('#greeting').innerText()).includes('Alice Corp'), 'signed in through the corporate provider');
  check((await someone.locator('#accounts').innerText()).includes('Corp Login'), 'the linked account is listed');
  await someone.getByRole('button', { name: 'Sign out' }).first().click();
  await someone.goto(`${base}/login`);
  check(await someone.getByRole('link', { name: 'Continue with Corp Login' }).isVisible(), 'the last provider is offered first');
  await shoot(someone, 'login-remembered');
  await someone.getByRole('link', { name: 'Use another account' }).click();
  await someone.waitForURL(`${base}/login`);
  check(await someone.getByLabel('Email address').isVisible(), '"Use another account" asks for an address again');

  // Phone widths of the login steps.
  const phone = await open(PHONE);
  await phone.goto(`${base}/login`);
  await fitsPhone(phone, 'the login page');
  await shoot(phone, 'login-email-first-phone');
  check(consoleErrors.length === 0, `no browser console errors (${consoleErrors.join('; ')})`);
} catch (error) {
  failures.push(`the run stopped: ${error?.stack ?? error}`);
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ ok: failures.length === 0, failures, ...output }));
process.exit(failures.length === 0 ? 0 : 1);
