// Identity providers in the admin console, in Chromium, against real IdP software: alice (an
// admin) adds a SAML IdP (pysaml2) from its metadata URL, runs a test sign-in and sees the
// attributes and the user they map to; then the IdP is broken on purpose (the wrong audience,
// a clock running ahead, a new signing certificate) and each test names the reason. Last, she
// adds an OpenID Connect provider (panva's oidc-provider) and someone signs in through it.
// Usage: node connectors.mjs <issuer-url> <chromium-path> <python> <upstream-issuer> [screenshot-dir]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [base, executablePath, python, upstreamIssuer, screenshots] = process.argv.slice(2);
const TIMEOUT_MS = 30_000;
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
const output = {};

// The SAML IdP, started (and restarted with other settings on the same port) from here.
let idp = null;
async function startIdp(settings) {
  const child = spawn(python, ['tests/upstream/saml-idp.py', JSON.stringify(settings)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the SAML IdP did not start')), TIMEOUT_MS);
    lines.once('line', (line) => { clearTimeout(timer); resolve(JSON.parse(line)); });
    child.once('exit', (code) => reject(new Error(`the SAML IdP exited (${code})`)));
  });
  idp = { child, ...ready, base: ready.metadata_url.replace(/\/metadata$/, '') };
  return idp;
}
async function stopIdp() {
  if (!idp) return;
  const exited = new Promise((resolve) => idp.child.once('exit', resolve));
  idp.child.kill();
  await exited;
  idp = null;
}
const spMetadata = `${base}/saml/corp-saml/metadata`;
const users = { alice: { password: 'alice-pass', attributes: {
  mail: ['alice@corp.example'], displayName: ['Alice Corp'], groups: ['eng', 'ops'], uid: ['alice'] } } };
const fixtureKey = { key_pem: 'tests/fixtures/saml/keys/idp-rsa.key', cert_pem: 'tests/fixtures/saml/keys/idp-rsa.crt' };

async function shoot(page, name) {
  if (!screenshots) return;
  await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}
async function fitsPhone(page, what) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  // Names the elements that stick out, so a failure says where to look.
  const culprits = overflow <= 0 ? [] : await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && ![...e.children].some((c) => c.getBoundingClientRect().right > window.innerWidth + 1))
    .slice(0, 5).map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className ? '.' + e.className : ''}`));
  check(overflow <= 0, `${what} fits a phone's width (overflows by ${overflow}px: ${culprits.join(', ')})`);
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
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  return page;
}
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/// A test sign-in from the connector's page, through the IdP's form; ends on the result page.
async function testSignIn(page) {
  await page.goto(`${base}/admin/connectors/corp-saml`);
  await page.getByRole('button', { name: 'Test sign-in' }).click();
  await page.waitForURL((url) => url.href.startsWith(`${idp.base}/sso/redirect`));
  await page.locator('input[name=username]').fill('alice');
  await page.locator('input[name=password]').fill('alice-pass');
  await page.locator('button[value=login]').click();
  await page.waitForURL((url) => url.href.startsWith(`${base}/admin/connectors/corp-saml/test`));
}

try {
  await startIdp({ sp_metadata_url: spMetadata, users, ...fixtureKey });
  const port = Number(new URL(idp.base).port);
  const alice = await open(DESKTOP);
  await alice.goto(`${base}/admin/connectors`);
  // With passwords the only way in, the login page asks for both at once.
  await alice.getByLabel('Username or email').fill('alice');
  await alice.getByLabel('Password').fill('alice-password');
  await alice.getByRole('button', { name: 'Sign in' }).click();
  await alice.waitForURL(`${base}/admin/connectors`);
  check(await alice.getByRole('link', { name: 'Identity providers' }).getAttribute('aria-current') === 'page', 'the console has an Identity providers section');
  await shoot(alice, 'admin-connectors');

  // Add the SAML IdP from its metadata URL; saving reads the metadata and shows what it says.
  await alice.getByRole('link', { name: 'Add SAML provider' }).click();
  await alice.getByLabel('Name', { exact: true }).fill('Corp SSO');
  await alice.getByLabel('ID', { exact: true }).fill('corp-saml');
  await alice.getByLabel('Metadata URL').fill(idp.metadata_url);
  await shoot(alice, 'admin-connector-new-saml');
  await alice.getByRole('button', { name: 'Check and add' }).click();
  const check1 = await alice.locator('#check').innerText();
  check(check1.includes(`${idp.base}/sso/redirect`), `the metadata's sign-in URL is shown (${check1})`);
  check(/[0-9A-F]{2}(:[0-9A-F]{2}){31}/.test(check1) && check1.includes('expires'), 'the certificate is shown with its expiry');
  check((await alice.locator('#summary').innerText()).includes(`${base}/saml/corp-saml/acs`), 'the ACS URL to register is shown');
  await shoot(alice, 'admin-connector-saml');

  // A test sign-in: what the IdP sent and the user it maps to; nothing is created.
  await testSignIn(alice);
  const result = await alice.locator('main').innerText();
  check(result.includes('would create a new user'), `the test says what would happen (${result.slice(0, 300)})`);
  const received = await alice.locator('#received').innerText();
  for (const value of ['alice@corp.example', 'Alice Corp', 'eng', 'ops', 'NameID']) check(received.includes(value), `the attributes include ${value}`);
  check((await alice.locator('#mapped').innerText()).includes('eng, ops'), 'the groups after the rules are shown');
  await shoot(alice, 'admin-connector-test');

  // The rules' dry run starts from the test's attributes.
  await alice.getByRole('link', { name: 'Try mapping rules on these values' }).click();
  check((await alice.getByLabel('Attributes (JSON)').inputValue()).includes('alice@corp.example'), "the dry run starts from the test's attributes");
  await alice.getByLabel(/^Rules/).fill('{"groups": {"prefix_with_connector": true, "static_groups": ["employees"]}}');
  await alice.getByRole('button', { name: 'Dry run', exact: true }).click();
  check((await alice.locator('#dry-run').innerText()).includes('corp-saml:eng, corp-saml:ops, employees'), 'the dry run shows the groups the rules make');
  await shoot(alice, 'admin-connector-mapping');

  // The IdP says the assertion is for another audience.
  await stopIdp();
  await startIdp({ sp_metadata_url: spMetadata, users, ...fixtureKey, port, audience: 'https://wrong.example/sp' });
  await testSignIn(alice);
  const audience = await alice.locator('#test-failed').innerText();
  check(audience.includes('audience_mismatch') && audience.includes(`expected \`${base}/saml/corp-saml\``)
    && audience.includes('got `https://wrong.example/sp`'), `the wrong audience is named with both values (${audience})`);
  await shoot(alice, 'admin-connector-test-failed');

  // The IdP's clock runs ten minutes ahead: its assertion is not yet valid here.
  await stopIdp();
  await startIdp({ sp_metadata_url: spMetadata, users, ...fixtureKey, port, not_before_skew_secs: -600 });
  await testSignIn(alice);
  const skew = await alice.locator('#test-failed').innerText();
  check(skew.includes('clock_skew') && skew.includes('NotBefore') && skew.includes('allowed skew 60 s'), `the clock skew is named with the times (${skew})`);

  // The IdP signs with a new certificate that Gatehouse does not know yet.
  await stopIdp();
  await startIdp({ sp_metadata_url: spMetadata, users, port });
  await testSignIn(alice);
  const signature = await alice.locator('#test-failed').innerText();
  check(signature.includes('signature_invalid') && signature.includes('IdP certificates tried (SHA-256)'), `the signature refusal names the certificates tried (${signature})`);

  // The connector's page lists each refusal with what to try.
  await alice.goto(`${base}/admin/connectors/corp-saml`);
  const listed = await alice.locator('#failures').innerText();
  for (const reason of ['audience_mismatch', 'clock_skew', 'signature_invalid']) check(listed.includes(reason), `${reason} is listed on the connector's page`);
  await shoot(alice, 'admin-connector-failures');
  const phone = await open(PHONE);
  await phone.context().addCookies(await alice.context().cookies());
  await phone.goto(`${base}/admin/connectors/corp-saml`);
  await fitsPhone(phone, "the connector's page");
  await shoot(phone, 'admin-connector-failures-phone');
  for (const [path, name] of [
    ['/admin/connectors', 'admin-connectors-phone'],
    ['/admin/connectors/new?type=saml', 'admin-connector-new-saml-phone'],
    ['/admin/connectors/corp-saml/test', 'admin-connector-test-phone'],
    ['/admin/connectors/corp-saml/mapping', 'admin-connector-mapping-phone'],
    ['/saml/corp-saml', 'saml-connector-page-phone'],
  ]) {
    await phone.goto(`${base}${path}`);
    await fitsPhone(phone, path);
    await shoot(phone, name);
  }
  // The page an administrator fills the IdP's form from.
  await alice.goto(`${base}/saml/corp-saml`);
  check((await alice.locator('#acs-url').innerText()) === `${base}/saml/corp-saml/acs`, 'the SAML page shows the ACS URL');
  check((await alice.locator('.fingerprint').count()) >= 2, 'the SAML page shows the SP certificate fingerprints');
  await shoot(alice, 'saml-connector-page');
  // The user page's new forms: link an identity, merge another user.
  await alice.goto(`${base}/admin/users`);
  await alice.getByRole('link', { name: 'alice' }).first().click();
  check(await alice.getByRole('button', { name: 'Link' }).isVisible() && await alice.getByRole('button', { name: 'Merge…' }).isVisible(), 'the user page offers linking and merging');
  await shoot(alice, 'admin-user-links');
  await phone.goto(alice.url());
  await fitsPhone(phone, 'the user page');
  await shoot(phone, 'admin-user-links-phone');

  // An OpenID Connect provider, checked on save, then used to sign in.
  await alice.goto(`${base}/admin/connectors`);
  await alice.getByRole('link', { name: 'Add OpenID Connect provider' }).click();
  await alice.getByLabel('Name', { exact: true }).fill('Corp Login');
  await alice.getByLabel('ID', { exact: true }).fill('corp');
  await alice.getByLabel('Issuer').fill(upstreamIssuer);
  await alice.getByLabel('Client ID').fill('gatehouse');
  await alice.getByLabel('Client secret').fill('gatehouse-upstream-secret');
  await alice.getByLabel('Scopes').fill('openid email profile groups');
  await alice.getByLabel('Email domains').fill('corp.example');
  await shoot(alice, 'admin-connector-new-oidc');
  await alice.getByRole('button', { name: 'Check and add' }).click();
  const check2 = await alice.locator('#check').innerText();
  check(check2.includes('ES256') && check2.includes(`${upstreamIssuer}`), `discovery is shown (${check2})`);
  check(!(await alice.content()).includes('gatehouse-upstream-secret'), 'the secret is never shown again');
  await shoot(alice, 'admin-connector-oidc');

  const someone = await open(DESKTOP);
  await someone.goto(`${base}/login`);
  await someone.getByLabel('Email address').fill('alice@corp.example');
  await someone.getByRole('button', { name: 'Continue' }).click();
  await someone.waitForURL((url) => url.href.startsWith(`${upstreamIssuer}/interaction/`), { timeout: 10_000 });
  await someone.locator('input[name=login]').fill('alice-7f3a');
  await someone.getByRole('button', { name: 'Sign in' }).click();
  await someone.getByRole('button', { name: 'Allow' }).click();
  await someone.waitForURL(`${base}/`);
  check((await someone.locator('#greeting').innerText()).includes('Alice Corp'), 'signed in through the provider added in the console');
  check(consoleErrors.length === 0, `no browser console errors (${consoleErrors.join('; ')})`);
} catch (error) {
  failures.push(`the run stopped: ${error?.stack ?? error}`);
} finally {
  await browser.close();
  await stopIdp();
}
console.log(JSON.stringify({ ok: failures.length === 0, failures, ...output }));
process.exit(failures.length === 0 ? 0 : 1);
