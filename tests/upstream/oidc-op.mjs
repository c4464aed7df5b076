// A real upstream OpenID Provider (panva's oidc-provider) for the integration
// tests: `node tests/upstream/oidc-op.mjs <config.json>`. Prints one JSON line
// `{"issuer":"http://127.0.0.1:PORT"}` on stdout once it listens, and exits on
// SIGTERM/SIGINT or when stdin ends (so it never outlives the test that piped it).
//
// Config: {"port": 0, "id_token_alg": "RS256" | "PS256" | "ES256" | "EdDSA",
//   "clients": [{"client_id", "client_secret"?, "redirect_uris", ...other client metadata}],
//   "accounts": {"<accountId>": {claims}}}
//
// The login and consent pages are plain HTML forms, so a cookie-jar HTTP client
// without JavaScript can drive them.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

// The npm dependencies live with the browser tests' package.json.
import Provider, { errors } from '../browser/node_modules/oidc-provider/lib/index.js';

// oidc-provider prints its notices with console.info; stdout carries only the ready line.
console.info = console.warn;

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const alg = config.id_token_alg ?? 'RS256';

const KEY_TYPES = {
  RS256: ['rsa', { modulusLength: 2048 }],
  PS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
  EdDSA: ['ed25519', {}],
};
if (!KEY_TYPES[alg]) throw new Error(`unsupported id_token_alg ${alg}`);
// A fresh key per run; its `alg` restricts the provider (and its discovery
// document) to exactly this ID token algorithm. The kid is the key's thumbprint,
// computed by oidc-provider.
const { privateKey } = generateKeyPairSync(...KEY_TYPES[alg]);
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig' };

const PROFILE_CLAIMS = [
  'name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username',
  'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at',
];

const server = createServer();
server.listen(config.port ?? 0, '127.0.0.1');
await new Promise((resolve, reject) => server.once('listening', resolve).once('error', reject));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    token_endpoint_auth_method: client.client_secret ? 'client_secret_basic' : 'none',
    id_token_signed_response_alg: alg,
    ...client,
  })),
  jwks: { keys: [signingKey] },
  // Cookies are only marked Secure for https requests, so they work over plain http here.
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  async findAccount(_ctx, accountId) {
    const claims = config.accounts[accountId];
    return claims && { accountId, claims: () => ({ ...claims, sub: accountId }) };
  },
  // realm_access sits under `openid` so it is released whatever else is asked,
  // like Keycloak's roles; groups needs the custom `groups` scope.
  claims: {
    openid: ['sub', 'realm_access'],
    email: ['email', 'email_verified'],
    profile: PROFILE_CLAIMS,
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  // Release scope claims in the ID token too, not only from userinfo.
  conformIdTokenClaims: false,
  pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
  features: { devInteractions: { enabled: false } },
  clientBasedCORS: () => true,
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});

const escape = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>Upstream OP</title></head><body>${body}</body></html>`);
}

async function formBody(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// POST /interaction/:uid/confirm: grant what the consent prompt says is missing
// (the pattern from oidc-provider's example).
async function consent(details) {
  const { prompt: { details: missing }, params, session: { accountId } } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

async function interaction(req, res) {
  const [, , uid, action] = new URL(req.url, issuer).pathname.split('/');
  // Needs the interaction cookie set by the authorization request (path /interaction/<uid>).
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, '<p>Interaction mismatch</p>');
  const prompt = details.prompt.name;
  const abort = `<form method="post" action="/interaction/${uid}/abort"><button type="submit">Cancel</button></form>`;

  if (req.method === 'GET' && action === undefined && prompt === 'login') {
    return page(res, 200, `<h1>Sign in</h1>
<form method="post" action="/interaction/${uid}/login">
<input name="login" value="${escape(details.params.login_hint)}" autofocus>
<button type="submit">Sign in</button>
</form>
${abort}`);
  }
  if (req.method === 'GET' && action === undefined && prompt === 'consent') {
    return page(res, 200, `<h1>Authorize ${escape(details.params.client_id)}</h1>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit">Allow</button></form>
${abort}`);
  }
  if (req.method === 'POST' && action === 'login' && prompt === 'login') {
    const accountId = (await formBody(req)).get('login');
    if (!Object.hasOwn(config.accounts, accountId ?? '')) {
      return page(res, 400, `<p>Unknown account ${escape(accountId)}</p>`);
    }
    return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt === 'consent') {
    return provider.interactionFinished(req, res, await consent(details), { mergeWithLastSubmission: true });
  }
  if (req.method === 'POST' && action === 'abort') {
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  return page(res, 400, `<p>Unexpected ${escape(req.method)} ${escape(action)} for prompt ${escape(prompt)}</p>`);
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (!req.url.startsWith('/interaction/')) return callback(req, res);
  return interaction(req, res).catch((err) => {
    if (err instanceof errors.SessionNotFound) return page(res, 400, `<p>${escape(err.error_description)}</p>`);
    console.error(err);
    return page(res, 500, '<p>Internal error</p>');
  });
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);

const exit = () => process.exit(0);
process.on('SIGTERM', exit);
process.on('SIGINT', exit);
process.stdin.on('end', exit);
process.stdin.resume();
