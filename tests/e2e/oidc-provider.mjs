// A real OpenID Connect provider for the end-to-end run (panva's oidc-provider),
// issuer http://127.0.0.1:PORT, with no login form: /interaction/:uid signs in
// the user named by the login_hint (an e-mail address) and grants every scope
// asked for. Discovery: /.well-known/openid-configuration; token /token;
// userinfo /me. Clients (redirect_uris [REDIRECT_URI] unless noted):
//   fluxbase-oidc   / fluxbase-oidc-secret   client_secret_basic, code
//   fluxbase-oauth2 / fluxbase-oauth2-secret client_secret_post, code
//   fluxbase-native (public, implicit id_token, http://127.0.0.1:PORT/native-callback;
//                    follow(url, { until: ISSUER + '/native-callback' }) gets the fragment)
// PKCE (S256) is accepted but optional for the confidential clients. Unlike
// plain oidc-provider, /token rejects (401 invalid_client) a confidential
// client that authenticates with the other of basic/post.
// Accounts: sub 'u-' + 16 hex of sha256(email); email_verified is false for
// e-mails starting with 'unverified'.
// usage: node oidc-provider.mjs PORT REDIRECT_URI
import Provider from 'oidc-provider';
import { createServer } from 'node:http';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  process.stderr.write('usage: node oidc-provider.mjs PORT REDIRECT_URI\n');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const log = (msg) => process.stderr.write(`oidc-provider: ${msg}\n`);

// Accounts come into being at sign-in; findAccount only knows the sub.
const emails = new Map(); // sub -> email
const subFor = (email) => `u-${createHash('sha256').update(email).digest('hex').slice(0, 16)}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  clients: [
    {
      client_id: 'fluxbase-oidc',
      client_secret: 'fluxbase-oidc-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'fluxbase-oauth2',
      client_secret: 'fluxbase-oauth2-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      // A mobile-app style client: an id_token straight from the fragment.
      client_id: 'fluxbase-native',
      application_type: 'native', // http redirect on a loopback address
      redirect_uris: [`${issuer}/native-callback`],
      grant_types: ['implicit'],
      response_types: ['id_token'],
      token_endpoint_auth_method: 'none',
    },
  ],
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'picture', 'preferred_username'],
  },
  // Put the scope's claims in the id_token of the code flow too, not only at /me.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const email = emails.get(sub);
    if (!email) return undefined;
    const name = email.split('@')[0];
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email,
          email_verified: !email.startsWith('unverified'),
          name,
          preferred_username: name,
          picture: `${issuer}/avatar/${sub}`,
        };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => log(`server_error ${err.stack}`));

// Signs in login_hint and consents to everything requested, in one step.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  let accountId = session?.accountId;
  const result = {};
  if (prompt.name === 'login' || !accountId) {
    const email = params.login_hint;
    if (!email) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('oidc-provider (e2e): login_hint (an e-mail address) is required to sign in\n');
      return;
    }
    accountId = subFor(email);
    emails.set(accountId, email);
    result.login = { accountId };
  }
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope ?? 'openid'));
  if (params.claims) {
    const requested = JSON.parse(params.claims);
    grant.addOIDCClaims([
      ...Object.keys(requested.id_token ?? {}),
      ...Object.keys(requested.userinfo ?? {}),
    ]);
  }
  for (const [indicator, scopes] of Object.entries(prompt.details?.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  result.consent = { grantId: await grant.save() };
  log(`${prompt.name}: ${emails.get(accountId)} -> ${params.client_id} (${params.scope})`);
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

// oidc-provider lets a client_secret_basic client use client_secret_post and
// vice versa; be stricter, so a test sees the proxy use the registered method.
const registeredAuth = { 'fluxbase-oidc': 'client_secret_basic', 'fluxbase-oauth2': 'client_secret_post' };
async function strictTokenAuth(req, res) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString();
  const form = new URLSearchParams(raw);
  const auth = req.headers.authorization ?? '';
  const basic = /^basic /i.test(auth);
  const clientId = basic
    ? decodeURIComponent(Buffer.from(auth.slice(6), 'base64').toString().split(':')[0])
    : form.get('client_id');
  const used = basic ? 'client_secret_basic' : form.has('client_secret') ? 'client_secret_post' : 'none';
  const registered = registeredAuth[clientId];
  if (registered && used !== registered) {
    log(`token: ${clientId} used ${used}, registered ${registered}`);
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_client', error_description: `${clientId} must authenticate with ${registered}, not ${used}` }));
    return;
  }
  req.body = raw; // oidc-provider takes an already-read body from req.body
  callback(req, res);
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.method === 'GET' && /^\/interaction\/[^/?]+(\?|$)/.test(req.url)) {
    interaction(req, res).catch((err) => {
      log(`interaction failed: ${err.message}`);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`oidc-provider (e2e): ${err.message}\n`);
    });
    return;
  }
  if (req.method === 'POST' && /^\/token(\?|$)/.test(req.url)) {
    strictTokenAuth(req, res).catch((err) => {
      log(`token failed: ${err.message}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end();
    });
    return;
  }
  if (req.url.startsWith('/native-callback')) {
    // The id_token is in the fragment, which never reaches a server.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('fluxbase-native: the id_token is in the URL fragment\n');
    return;
  }
  callback(req, res);
});
server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`oidc-provider listening on ${issuer}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
