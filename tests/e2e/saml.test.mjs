// SAML 2.0 SSO through supabase-js signInWithSSO. The identity provider's
// part is played here: a key and certificate from openssl, metadata naming
// them, and Responses signed with xml-crypto (a widely used XML-DSig
// implementation), posted to the ACS as a browser would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { randomUUID } from 'node:crypto';
import { SignedXml } from 'xml-crypto';
import { createClient } from '@supabase/supabase-js';
import { env, sql, proxyWith } from './helpers.mjs';

const APP = 'http://localhost:3000';
const IDP = 'https://idp.acme.test/metadata';
const dir = mkdtempSync(join(tmpdir(), 'fluxbase-saml-'));

function keyPair(name) {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${name}`,
    '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`)], { stdio: 'ignore' });
  const cert = readFileSync(join(dir, `${name}.crt`), 'utf8');
  return { key: readFileSync(join(dir, `${name}.key`), 'utf8'), cert, body: cert.replace(/-----[^-]+-----|\s/g, '') };
}
const idpKey = keyPair('idp');
const strangerKey = keyPair('stranger');

const metadata = `<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="${IDP}">
  <md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>${idpKey.body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.acme.test/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>`;
writeFileSync(join(dir, 'idp.xml'), metadata);

const iso = (offsetSeconds = 0) => new Date(Date.now() + offsetSeconds * 1000).toISOString();

function assertion({ email, requestId, acs, audience, id = `_a${randomUUID().replace(/-/g, '')}`, bindRequest = true }) {
  return `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${iso()}">` +
    `<saml:Issuer>${IDP}</saml:Issuer>` +
    `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${email}</saml:NameID>` +
    `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">` +
    `<saml:SubjectConfirmationData NotOnOrAfter="${iso(300)}" Recipient="${acs}"${bindRequest ? ` InResponseTo="${requestId}"` : ''}/>` +
    `</saml:SubjectConfirmation></saml:Subject>` +
    `<saml:Conditions NotBefore="${iso(-60)}" NotOnOrAfter="${iso(300)}"><saml:AudienceRestriction><saml:Audience>${audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${iso()}" SessionIndex="_s1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    `<saml:AttributeStatement><saml:Attribute Name="email"><saml:AttributeValue>${email}</saml:AttributeValue></saml:Attribute>` +
    `<saml:Attribute Name="groups"><saml:AttributeValue>eng</saml:AttributeValue><saml:AttributeValue>admins</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>` +
    `</saml:Assertion>`;
}

function response(inner, { requestId, acs }) {
  return `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ` +
    `ID="_r${randomUUID().replace(/-/g, '')}" Version="2.0" IssueInstant="${iso()}" Destination="${acs}" InResponseTo="${requestId}">` +
    `<saml:Issuer>${IDP}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>` +
    `${inner}</samlp:Response>`;
}

/** Signs the assertion with ID `id` inside `xml` (enveloped, exclusive C14N, RSA-SHA256). */
function sign(xml, id, key = idpKey) {
  const sig = new SignedXml({
    privateKey: key.key,
    publicCert: key.cert,
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  });
  sig.addReference({
    xpath: `//*[@ID='${id}']`,
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
  });
  sig.computeSignature(xml, { location: { reference: `//*[@ID='${id}']/*[local-name(.)='Issuer']`, action: 'after' } });
  return sig.getSignedXml();
}

/** Starts a sign-in: the AuthnRequest's ID and ACS, the RelayState, the client holding the PKCE verifier. */
async function start(proxy, domain = 'acme.test') {
  const sb = createClient(proxy.url, env.anonKey, { auth: { flowType: 'pkce', persistSession: false, autoRefreshToken: false } });
  const { data, error } = await sb.auth.signInWithSSO({ domain, options: { redirectTo: `${APP}/sso` } });
  if (error) return { error };
  const url = new URL(data.url);
  assert.equal(`${url.origin}${url.pathname}`, 'https://idp.acme.test/sso');
  const request = inflateRawSync(Buffer.from(url.searchParams.get('SAMLRequest'), 'base64')).toString();
  return {
    sb,
    relay: url.searchParams.get('RelayState'),
    requestId: /\bID="([^"]+)"/.exec(request)[1],
    acs: /AssertionConsumerServiceURL="([^"]+)"/.exec(request)[1],
    audience: /<(?:\w+:)?Issuer[^>]*>([^<]+)</.exec(request)[1],
  };
}

async function post(flow, xml, relay = flow.relay) {
  const res = await fetch(flow.acs, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ SAMLResponse: Buffer.from(xml).toString('base64'), RelayState: relay }),
    redirect: 'manual',
  });
  assert.equal(res.status, 302, await res.text());
  return new URL(res.headers.get('location'));
}

function signedResponse(flow, email, options = {}) {
  const id = `_a${randomUUID().replace(/-/g, '')}`;
  return response(sign(assertion({ ...flow, email, id, ...options }), id), flow);
}

test('SAML SSO: signInWithSSO, a signed assertion at the ACS, exchangeCodeForSession', async () => {
  const proxy = await proxyWith({
    FLUXBASE_AUTH_SAML_PROVIDERS: `{ acme = { metadata_file = "${join(dir, 'idp.xml')}", domains = ["acme.test"] } }`,
  });
  try {
    const settings = await (await fetch(`${proxy.url}/auth/v1/settings`)).json();
    assert.equal(settings.saml_enabled, true);
    const meta = await fetch(`${proxy.url}/auth/v1/sso/saml/metadata`);
    assert.match(meta.headers.get('content-type'), /samlmetadata\+xml/);
    const spXml = await meta.text();
    assert.match(spXml, new RegExp(`entityID="${proxy.url}/auth/v1/sso/saml/metadata"`));
    assert.match(spXml, new RegExp(`Location="${proxy.url}/auth/v1/sso/saml/acs"`));

    // Someone already has this address with a password: SSO does not take that account over.
    const email = `ada-${Date.now()}@acme.test`;
    const owner = await createClient(proxy.url, env.anonKey, { auth: { persistSession: false } })
      .auth.signUp({ email, password: 'owner-password' });
    assert.equal(owner.error, null);

    const flow = await start(proxy);
    assert.equal(flow.acs, `${proxy.url}/auth/v1/sso/saml/acs`);
    const back = await post(flow, signedResponse(flow, email));
    assert.equal(`${back.origin}${back.pathname}`, `${APP}/sso`);
    const code = back.searchParams.get('code');
    assert.ok(code, back.href);
    const { data, error } = await flow.sb.auth.exchangeCodeForSession(code);
    assert.equal(error, null);
    assert.equal(data.user.email, email);
    assert.notEqual(data.user.id, owner.data.user.id);
    assert.equal(data.user.app_metadata.provider, 'sso:acme');
    assert.deepEqual(data.user.user_metadata.custom_claims.groups, ['eng', 'admins']);
    assert.equal(sql(`SELECT is_sso_user FROM auth.users WHERE id = '${data.user.id}'`), 't');
    const claims = JSON.parse(Buffer.from(data.session.access_token.split('.')[1], 'base64url'));
    assert.equal(claims.amr[0].method, 'sso/saml');

    // The same person again: the same SSO user.
    const again = await start(proxy);
    const second = await post(again, signedResponse(again, email));
    const { data: data2 } = await again.sb.auth.exchangeCodeForSession(second.searchParams.get('code'));
    assert.equal(data2.user.id, data.user.id);

    // A relay state is used once.
    const replayed = await post(flow, signedResponse(flow, email));
    assert.equal(replayed.searchParams.get('error_code'), 'bad_saml_relay_state');
    assert.equal((await start(proxy, 'unknown.test')).error?.code, 'sso_provider_not_found');
  } finally {
    proxy.stop();
  }
});

test('SAML SSO: unsigned, tampered, foreign-key, misdirected and wrapped responses are refused', async () => {
  const proxy = await proxyWith({
    FLUXBASE_AUTH_SAML_PROVIDERS: `{ acme = { metadata_file = "${join(dir, 'idp.xml')}", domains = ["acme.test"] } }`,
  });
  const refused = async (make) => {
    const flow = await start(proxy);
    const back = await post(flow, make(flow));
    assert.equal(back.searchParams.get('code'), null, back.href);
    return back.searchParams.get('error_code');
  };
  try {
    const email = `bob-${Date.now()}@acme.test`;
    assert.equal(await refused((f) => response(assertion({ ...f, email }), f)), 'saml_assertion_invalid', 'unsigned');
    assert.equal(await refused((f) => signedResponse(f, email).replaceAll(email, `mallory-${email}`)), 'saml_assertion_invalid', 'tampered');
    assert.equal(await refused((f) => {
      const id = '_stranger';
      return response(sign(assertion({ ...f, email, id }), id, strangerKey), f);
    }), 'saml_assertion_invalid', 'signed by a key the metadata does not name');
    assert.equal(await refused((f) => signedResponse({ ...f, requestId: '_another_request' }, email)), 'saml_assertion_invalid',
      'an answer to another request');
    assert.equal(await refused((f) => signedResponse({ ...f, audience: 'https://other-sp.test' }, email)), 'saml_assertion_invalid',
      'meant for another service provider');
    assert.equal(await refused((f) => signedResponse(f, email, { bindRequest: false })), 'saml_assertion_invalid',
      'an assertion not bound to this request');
    assert.equal(await refused((f) => signedResponse(f, `ceo-${Date.now()}@other-company.test`)), 'saml_assertion_invalid',
      'an address outside the provider\'s domains');
    // Signature wrapping: a signed assertion for bob plus an unsigned one for mallory.
    const flow = await start(proxy);
    const id = '_bob';
    const signed = sign(assertion({ ...flow, email, id }), id);
    const evil = assertion({ ...flow, email: `mallory-${Date.now()}@acme.test`, id: '_mallory' });
    const back = await post(flow, response(evil + signed, flow));
    const code = back.searchParams.get('code');
    if (code) {
      const { data } = await flow.sb.auth.exchangeCodeForSession(code);
      assert.equal(data.user.email, email, 'only the signed assertion may count');
    }
  } finally {
    proxy.stop();
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
