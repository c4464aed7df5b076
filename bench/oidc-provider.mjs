// panva's oidc-provider (the certified Node.js OpenID Provider) set up like the benchmark's
// Gatehouse: the client bench-service with client_credentials and scope api:read, Basic client
// authentication, introspection on, an ES256 signing key. Its access tokens are opaque and
// kept in memory. Started by bench/run.sh: `node bench/oidc-provider.mjs PORT`.
//
// The stock memory adapter is an LRU of 1,000 entries, which forgets most tokens of the
// first-time introspection scenario, so tokens are kept in a Map until they expire.
import { generateKeyPairSync } from 'node:crypto';

import Provider from '../tests/browser/node_modules/oidc-provider/lib/index.js';

const port = Number(process.argv[2]);
const store = new Map();

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUserCode() {
    return undefined;
  }

  async findByUid() {
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId() {}
}

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const provider = new Provider(`http://127.0.0.1:${port}`, {
  adapter: MapAdapter,
  clients: [
    {
      client_id: 'bench-service',
      client_secret: 'bench-service-secret-0123456789',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'api:read',
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    },
  ],
  scopes: ['api:read'],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: false },
  },
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig' }] },
});
provider.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
