// Signs in through the real login page in Chromium and checks what a person would see.
// Usage: node login.mjs <base-url> <chromium-path> [screenshot-dir]
import { chromium } from 'playwright-core';

const [base, executablePath, screenshots] = process.argv.slice(2);
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));

  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === '/login', `an anonymous visit to / lands on /login, not ${page.url()}`);
  check(await page.getByRole('heading', { name: 'Local accounts' }).isVisible(), 'the local connector is listed');
  const buttonColour = await page.locator('button[type=submit]').first().evaluate((el) => getComputedStyle(el).backgroundColor);
  check(buttonColour === 'rgb(43, 95, 217)', `the stylesheet is applied under the CSP (button colour ${buttonColour})`);
  if (screenshots) await page.screenshot({ path: `${screenshots}/login.png` });

  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('wrong-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForLoadState();
  check(await page.getByRole('alert').innerText() === 'Invalid username or password.', 'a wrong password shows a clear error');
  check(await page.getByLabel('Username').inputValue() === 'alice', 'the username is kept after an error');
  check(await page.getByLabel('Password').inputValue() === '', 'the password is not kept after an error');

  await page.getByLabel('Password').fill('alice-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/`);
  const greeting = await page.locator('#greeting').innerText();
  check(greeting === 'Welcome, Alice Example', `the portal greets the user by name (got "${greeting}")`);
  if (screenshots) await page.screenshot({ path: `${screenshots}/portal.png` });

  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'gatehouse_session');
  check(session !== undefined, 'a session cookie is set');
  check(session?.httpOnly === true, 'the session cookie is HttpOnly');
  check(session?.sameSite === 'Lax', `the session cookie is SameSite=Lax (got ${session?.sameSite})`);
  check(!(await page.evaluate(() => document.cookie)).includes('gatehouse_session'), 'page script cannot read the session cookie');

  // A second tab of the same browser is already signed in.
  const second = await context.newPage();
  await second.goto(`${base}/login`);
  check(second.url() === `${base}/`, 'a signed-in browser skips the login page');
  await second.close();

  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.waitForLoadState();
  check((await page.locator('main').innerText()).includes('You are signed out'), 'sign-out confirms');
  await page.goto(`${base}/`);
  check(new URL(page.url()).pathname === '/login', 'after sign-out the portal asks to sign in again');

  check(consoleErrors.length === 0, `no console errors or CSP violations: ${JSON.stringify(consoleErrors)}`);
} finally {
  await browser.close();
}
if (failures.length > 0) {
  console.error(JSON.stringify({ failures }));
  process.exit(1);
}
console.log(JSON.stringify({ ok: true }));
