// The docker-compose stack as a new evaluator uses it, in Chromium (run by .ci/compose-e2e):
// dana signs in to the demo app (Apache httpd + mod_auth_openidc) through the demo SAML IdP
// (SimpleSAMLphp), sees her claims and groups, and signs out; bob signs in with a local
// account; alice opens the admin console and finds dana, whom the SAML sign-in created.
// With COMPOSE_PHASE=after-restart (after `docker-compose down` and `up`: new containers, the
// same volumes), alice's saved browser state is still signed in to the console and dana is
// still there.
// Usage: node compose.mjs   (environment: COMPOSE_PHASE, COMPOSE_STATE, TEST_SCREENSHOTS,
// CHROMIUM=/usr/bin/chromium)
import { chromium } from 'playwright-core';

const GATEHOUSE = 'http://localhost:8080';
const APP = 'http://localhost:3000';
const IDP = 'http://localhost:8082';
const phase = process.env.COMPOSE_PHASE ?? 'first';
const statePath = process.env.COMPOSE_STATE ?? '/tmp/gatehouse-compose-admin-state.json';
const screenshots = process.env.TEST_SCREENSHOTS;
const TIMEOUT_MS = 30_000;
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  timeout: TIMEOUT_MS,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const consoleErrors = [];
async function open(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${page.url()}: ${e}`));
  return page;
}
async function shoot(page, name) {
  if (screenshots) await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}
const text = async (page, selector) => (await page.locator(selector).innerText()).trim();

/// Gatehouse's email-first login: the address, then (for a local account) the password.
async function gatehouseLogin(page, identifier, password, shot) {
  await page.waitForURL((url) => url.origin === GATEHOUSE && url.pathname === '/login');
  if (shot) await shoot(page, shot);
  await page.getByLabel('Email address').fill(identifier);
  await page.getByRole('button', { name: 'Continue' }).click();
  if (password) {
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }
}

async function appSignIn(page) {
  await page.goto(`${APP}/`);
  check((await page.locator('#sign-in').count()) === 1, 'the demo app offers to sign in');
  await page.locator('#sign-in').click();
}

async function claimsOf(page) {
  await page.waitForURL(`${APP}/`);
  return {
    name: await text(page, '#name'),
    email: await text(page, '#email'),
    groups: (await text(page, '#groups')).split(',').map((g) => g.trim()).filter(Boolean),
    idp: await text(page, '#idp'),
    idToken: JSON.parse(await text(page, '#id-token')),
  };
}

try {
  if (phase === 'first') {
    // dana: demo app -> Gatehouse -> SimpleSAMLphp -> Gatehouse -> demo app.
    const dana = await open();
    await appSignIn(dana);
    await gatehouseLogin(dana, 'dana@corp.example', undefined, 'compose-gatehouse-login');
    await dana.waitForURL((url) => url.origin === IDP);
    await shoot(dana, 'compose-saml-idp-login');
    await dana.locator('#username').fill('dana');
    await dana.locator('#password').fill('dana-password');
    await dana.locator('#submit_button, button[type=submit]').first().click();
    const claims = await claimsOf(dana);
    await shoot(dana, 'compose-demo-app-signed-in');
    check(claims.email === 'dana@corp.example', `the app shows dana's email (got ${claims.email})`);
    check(claims.name === 'Dana Corp', `the app shows dana's name (got ${claims.name})`);
    check(claims.groups.includes('engineering') && claims.groups.includes('sre'),
      `the app shows dana's SAML groups (got ${claims.groups.join(', ')})`);
    check(claims.idp === 'demo-saml', `the app shows the connector dana signed in through (got ${claims.idp})`);
    check(claims.idToken.iss === GATEHOUSE, `the ID token's issuer is Gatehouse (got ${claims.idToken.iss})`);
    check(claims.idToken.aud === 'demo-app' || claims.idToken.aud?.includes?.('demo-app'), 'the ID token is for the demo app');

    // Sign out: the app's session, then Gatehouse's (RP-initiated logout), back to the app.
    await dana.locator('#sign-out').click();
    await dana.waitForURL(`${APP}/`).catch(() => failures.push(`signing out returns to the app (at ${dana.url()})`));
    await shoot(dana, 'compose-signed-out');
    check((await dana.locator('#sign-in').count()) === 1, `after signing out the app offers to sign in again (at ${dana.url()})`);
    await dana.goto(`${GATEHOUSE}/`);
    check(new URL(dana.url()).pathname === '/login', `signing out of the app signed dana out of Gatehouse too (at ${dana.url()})`);

    // bob: a local account, from the same app.
    const bob = await open();
    await appSignIn(bob);
    await gatehouseLogin(bob, 'bob', 'bob-password');
    const bobClaims = await claimsOf(bob);
    check(bobClaims.email === 'bob@example.com', `the app shows bob's email (got ${bobClaims.email})`);
    check(bobClaims.groups.includes('managers'), `the app shows bob's groups (got ${bobClaims.groups.join(', ')})`);
    check(bobClaims.idp === 'local', `bob signed in with a local account (got ${bobClaims.idp})`);

    // alice, the admin: the console, and dana as the SAML sign-in created her.
    const alice = await open();
    await alice.goto(`${GATEHOUSE}/admin`);
    await gatehouseLogin(alice, 'alice', 'alice-password');
    await alice.waitForURL(`${GATEHOUSE}/admin`);
    await shoot(alice, 'compose-admin-overview');
    await alice.goto(`${GATEHOUSE}/admin/users`);
    check((await alice.locator('main').innerText()).includes('dana@corp.example'), 'the console lists dana, created by her SAML sign-in');
    await alice.goto(`${GATEHOUSE}/admin/connectors`);
    check((await alice.locator('main').innerText()).includes('demo-saml'), 'the console lists the demo SAML connector');
    await alice.context().storageState({ path: statePath });
  } else if (phase === 'after-restart') {
    const alice = await open({ storageState: statePath });
    await alice.goto(`${GATEHOUSE}/admin/users`);
    check(alice.url() === `${GATEHOUSE}/admin/users`, `alice's console session survived the restart (at ${alice.url()})`);
    check((await alice.locator('main').innerText()).includes('dana@corp.example'), 'dana survived the restart');
  } else {
    throw new Error(`unknown COMPOSE_PHASE ${phase}`);
  }
  check(consoleErrors.length === 0, `no console errors: ${consoleErrors.join(' | ')}`);
} catch (error) {
  failures.push(`the run stopped: ${error?.stack ?? error}`);
} finally {
  await browser.close();
}
if (failures.length > 0) {
  console.error(`compose.mjs (${phase}): ${failures.length} failed:\n- ${failures.join('\n- ')}`);
  process.exit(1);
}
console.log(`compose.mjs (${phase}): passed`);
