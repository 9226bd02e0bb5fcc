// Web3 sign-in (grant_type=web3) through supabase-js's auth.signInWithWeb3,
// with real keys: an Ethereum wallet (ethers) answering EIP-1193's
// eth_requestAccounts / eth_chainId / personal_sign, and a Solana wallet
// (tweetnacl) with signMessage and publicKey.toBase58, as supabase-js drives
// them; plus GoTrue's refusals for forged, expired, foreign and malformed
// messages (issue 14).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import { Wallet, getBytes, encodeBase58 } from 'ethers';
import nacl from 'tweetnacl';
import { env, sql, proxyWith } from './helpers.mjs';

const options = { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } };
const APP = 'http://localhost:3000';
let proxy;
let ethereumOnly;

before(async () => {
  proxy = await proxyWith({
    FLUXBASE_AUTH_WEB3_ETHEREUM_ENABLED: 'true',
    FLUXBASE_AUTH_WEB3_SOLANA_ENABLED: 'true',
    FLUXBASE_AUTH_REDIRECT_URLS: '["http://localhost:3000/*", "https://app.example.com/*"]',
  });
  ethereumOnly = await proxyWith({ FLUXBASE_AUTH_WEB3_ETHEREUM_ENABLED: 'true' });
});
after(() => {
  proxy?.stop();
  ethereumOnly?.stop();
});

const client = (url = proxy.url) => createClient(url, env.anonKey, options);
const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));

/** An EIP-1193 provider over an ethers wallet, as a browser wallet answers supabase-js. */
function ethereumWallet(wallet = Wallet.createRandom()) {
  return {
    wallet,
    async request({ method, params }) {
      if (method === 'eth_requestAccounts') return [wallet.address];
      if (method === 'eth_chainId') return '0x1';
      if (method === 'personal_sign') return wallet.signMessage(getBytes(params[0]));
      throw new Error(`unexpected ${method}`);
    },
  };
}

/** A Solana wallet adapter (signMessage, publicKey.toBase58) over an ed25519 key. */
function solanaWallet(keys = nacl.sign.keyPair()) {
  return {
    keys,
    publicKey: { toBase58: () => encodeBase58(keys.publicKey) },
    async signMessage(bytes) {
      return nacl.sign.detached(bytes, keys.secretKey);
    },
  };
}

/** An EIP-4361 message as a dapp writes it. */
function siwe(address, { domain = 'localhost:3000', uri = `${APP}/login`, issuedAt = new Date(), chainId = '1',
  expirationTime, notBefore } = {}) {
  return [
    `${domain} wants you to sign in with your Ethereum account:`,
    address,
    '',
    'Sign in to the e2e app',
    '',
    `URI: ${uri}`,
    'Version: 1',
    `Chain ID: ${chainId}`,
    `Nonce: ${randomBytes(8).toString('hex')}`,
    `Issued At: ${issuedAt.toISOString()}`,
    ...(expirationTime ? [`Expiration Time: ${expirationTime.toISOString()}`] : []),
    ...(notBefore ? [`Not Before: ${notBefore.toISOString()}`] : []),
  ].join('\n');
}

const minutes = (n) => new Date(Date.now() + n * 60_000);

test('disabled by default: 422 web3_provider_disabled, as GoTrue; a disabled chain names itself', async () => {
  const { wallet } = ethereumWallet();
  const message = siwe(wallet.address);
  const off = await client(env.url).auth.signInWithWeb3({
    chain: 'ethereum', message, signature: await wallet.signMessage(message),
  });
  assert.equal(off.error.status, 422);
  assert.equal(off.error.code, 'web3_provider_disabled');
  assert.equal(off.error.message, 'Web3 provider is disabled');
  const solana = await fetch(`${ethereumOnly.url}/auth/v1/token?grant_type=web3`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ chain: 'solana', message, signature: 'x' }),
  });
  assert.equal(solana.status, 422);
  const body = await solana.json();
  assert.equal(body.error_code, 'web3_provider_disabled');
  assert.equal(body.msg, 'Solana Web3 provider is disabled');
  const other = await fetch(`${proxy.url}/auth/v1/token?grant_type=web3`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ chain: 'bitcoin', message, signature: 'x' }),
  });
  assert.equal(other.status, 400);
  const unsupported = await other.json();
  assert.equal(unsupported.error_code, 'web3_unsupported_chain');
  assert.equal(unsupported.msg, 'Unsupported chain');
});

test('Ethereum: supabase-js signs in with a wallet; one user per address, whatever its casing', async () => {
  const provider = ethereumWallet();
  const address = provider.wallet.address.toLowerCase();
  const { data, error } = await client().auth.signInWithWeb3({
    chain: 'ethereum', wallet: provider, statement: 'Sign in to the e2e app', options: { url: `${APP}/login` },
  });
  assert.equal(error, null);
  assert.ok(data.session.access_token);
  const user = data.user;
  assert.equal(user.email, '');
  assert.deepEqual(user.app_metadata, { provider: 'web3', providers: ['web3'] });
  assert.equal(user.identities.length, 1);
  const identity = user.identities[0];
  assert.equal(identity.provider, 'web3');
  assert.equal(identity.id, `web3:ethereum:${address}`);
  assert.deepEqual(identity.identity_data, {
    sub: `web3:ethereum:${address}`,
    custom_claims: { address, chain: 'ethereum', network: '1', domain: 'localhost:3000',
      statement: 'Sign in to the e2e app' },
    email_verified: false,
    phone_verified: false,
  });
  assert.deepEqual(user.user_metadata, identity.identity_data);
  const access = claims(data.session.access_token);
  assert.equal(access.sub, user.id);
  assert.equal(access.role, 'authenticated');
  assert.deepEqual(access.amr.map((m) => m.method), ['web3']);

  // Signed again, by the address in lower case this time: the same user.
  const message = siwe(address);
  const again = await client().auth.signInWithWeb3({
    chain: 'ethereum', message, signature: await provider.wallet.signMessage(message),
  });
  assert.equal(again.error, null);
  assert.equal(again.data.user.id, user.id);
  assert.equal(sql(`SELECT count(*) FROM auth.identities WHERE provider = 'web3' AND user_id = '${user.id}'`), '1');

  // A signed message works once.
  const replay = await client().auth.signInWithWeb3({
    chain: 'ethereum', message, signature: await provider.wallet.signMessage(message),
  });
  assert.equal(replay.error.status, 400);
  assert.equal(replay.error.message, 'Signed message has already been used');

  // A banned wallet: 403 user_banned (GoTrue's external sign-in), and a
  // refresh token that outlived the ban (set in SQL: the admin API's ban
  // also ends the sessions) GoTrue's "Invalid Refresh Token: User Banned".
  sql(`UPDATE auth.users SET banned_until = now() + interval '1 hour' WHERE id = '${user.id}'`);
  const banned = siwe(address);
  const refused = await client().auth.signInWithWeb3({
    chain: 'ethereum', message: banned, signature: await provider.wallet.signMessage(banned),
  });
  assert.deepEqual([refused.error.status, refused.error.code, refused.error.message], [403, 'user_banned', 'User is banned']);
  const refresh = await client().auth.refreshSession({ refresh_token: again.data.session.refresh_token });
  assert.deepEqual([refresh.error.status, refresh.error.code, refresh.error.message],
    [400, 'user_banned', 'Invalid Refresh Token: User Banned']);
});

test('Ethereum refusals, in GoTrue\'s words', async () => {
  const { wallet } = ethereumWallet();
  const signIn = async (message, signature) => {
    const { data, error } = await client().auth.signInWithWeb3({
      chain: 'ethereum', message, signature: signature ?? (await wallet.signMessage(message)),
    });
    assert.equal(data.session, null);
    return [error.status, error.code, error.message];
  };
  const forged = siwe(wallet.address);
  assert.deepEqual(await signIn(forged, await Wallet.createRandom().signMessage(forged)),
    [400, undefined, 'Signature does not match address in message']);
  assert.deepEqual(await signIn(siwe(wallet.address, { issuedAt: minutes(-2), expirationTime: minutes(-1) })),
    [400, undefined, 'Signed Ethereum message is expired']);
  assert.deepEqual(await signIn(siwe(wallet.address, { issuedAt: minutes(-11) })),
    [400, undefined, 'Ethereum message was issued too long ago']);
  assert.deepEqual(await signIn(siwe(wallet.address, { issuedAt: minutes(11) })),
    [400, undefined, 'Ethereum message was issued too far in the future']);
  assert.deepEqual(await signIn(siwe(wallet.address, { notBefore: minutes(2), expirationTime: minutes(5) })),
    [400, undefined, 'Signed Ethereum message becomes valid in the future']);
  assert.deepEqual(await signIn(siwe(wallet.address, { domain: 'evil.example', uri: 'https://evil.example/login' })),
    [400, undefined, 'Signed Ethereum message is using URI which is not allowed on this server, message was signed for another app']);
  assert.deepEqual(await signIn(siwe(wallet.address, { domain: 'app.example.com', uri: 'http://app.example.com/' })),
    [400, undefined, 'Signed Ethereum message is using URI which does not use HTTPS']);
  assert.deepEqual(await signIn(siwe(wallet.address, { domain: 'evil.example', uri: 'https://app.example.com/in' })),
    [400, undefined, 'Signed Ethereum message is using a Domain that does not match the one in URI which is not allowed on this server']);
  assert.deepEqual(await signIn(siwe(wallet.address, { chainId: 'mainnet' })),
    [400, 'validation_failed', 'siwe: Chain ID is not valid']);
  assert.deepEqual(await signIn('too short', '0x00'), [400, 'validation_failed', 'message is too short']);
  assert.deepEqual(await signIn(siwe(wallet.address), '0x1234'),
    [400, 'validation_failed', 'signature must be 65 bytes long, encoded as a 130 character-long hexadecimal string']);
  assert.deepEqual(await signIn(siwe(wallet.address).replace('Version: 1', 'Version: 2')),
    [400, 'validation_failed', 'siwe: Version value is not supported, expected 1 got "2"']);
  // A message for an allowed HTTPS app of its own domain signs in.
  const message = siwe(wallet.address, { domain: 'app.example.com', uri: 'https://app.example.com/in' });
  const good = await client().auth.signInWithWeb3({ chain: 'ethereum', message, signature: await wallet.signMessage(message) });
  assert.equal(good.error, null);
  assert.equal(good.data.user.identities[0].identity_data.custom_claims.domain, 'app.example.com');
  // Nothing of the refused attempts was kept.
  assert.equal(sql(`SELECT count(*) FROM auth.identities WHERE provider_id = 'web3:ethereum:${wallet.address.toLowerCase()}'`), '1');
});

test('Solana: supabase-js signs in with a wallet adapter; refusals for forged and malformed signatures', async () => {
  const wallet = solanaWallet();
  const address = wallet.publicKey.toBase58();
  const { data, error } = await client().auth.signInWithWeb3({
    chain: 'solana', wallet, statement: 'Sign in with Solana', options: { url: `${APP}/` },
  });
  assert.equal(error, null);
  const identity = data.user.identities[0];
  assert.equal(identity.id, `web3:solana:${address}`);
  assert.deepEqual(identity.identity_data.custom_claims, {
    address, chain: 'solana', network: '', domain: 'localhost:3000', statement: 'Sign in with Solana',
  });
  assert.deepEqual(claims(data.session.access_token).amr.map((m) => m.method), ['web3']);
  const again = await client().auth.signInWithWeb3({ chain: 'solana', wallet, options: { url: `${APP}/` } });
  assert.equal(again.data.user.id, data.user.id);

  const message = [
    `localhost:3000 wants you to sign in with your Solana account:`, address, '',
    'Version: 1', `URI: ${APP}/`, `Issued At: ${new Date().toISOString()}`, 'Chain ID: solana:devnet',
  ].join('\n');
  const send = (body) => fetch(`${proxy.url}/auth/v1/token?grant_type=web3`, {
    method: 'POST', headers: { apikey: env.anonKey, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const forged = nacl.sign.detached(new TextEncoder().encode(message), nacl.sign.keyPair().secretKey);
  const refused = await send({ chain: 'solana', message, signature: Buffer.from(forged).toString('base64') });
  assert.equal(refused.status, 400);
  assert.deepEqual(await refused.json(), { error: 'invalid_grant', error_description: 'Signature does not match address in message' });
  const short = await send({ chain: 'solana', message, signature: 'abc' });
  assert.equal((await short.json()).msg, 'signature must be 64 bytes encoded as base64 with or without padding');
  const badChain = await send({
    chain: 'solana', message: message.replace('solana:devnet', 'devnet'),
    signature: Buffer.from(forged).toString('base64'),
  });
  assert.equal((await badChain.json()).msg, 'siws: Chain ID is not valid');
  // Standard base64 with padding is read as well as supabase-js's base64url.
  const signed = nacl.sign.detached(new TextEncoder().encode(message), wallet.keys.secretKey);
  const padded = await send({ chain: 'solana', message, signature: Buffer.from(signed).toString('base64') });
  assert.equal(padded.status, 200);
  assert.equal((await padded.json()).user.id, data.user.id);
  // Malformed bodies are refused and the proxy keeps serving.
  const garbage = await fetch(`${proxy.url}/auth/v1/token?grant_type=web3`, {
    method: 'POST', headers: { apikey: env.anonKey, 'content-type': 'application/json' }, body: '{"chain":',
  });
  assert.equal(garbage.status, 400);
  assert.equal((await fetch(`${proxy.url}/auth/v1/health`, { headers: { apikey: env.anonKey } })).status, 200);
});
