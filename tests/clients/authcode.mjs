// The MCP TypeScript SDK's OAuth client (`auth()` from
// @modelcontextprotocol/sdk/client/auth.js, with an OAuthClientProvider as an MCP
// host implements one) gets a person's tokens from a running authmd-proxy with the
// authorization-code flow and PKCE, refreshes them, and calls the protected MCP
// resource with them.
//
//   npm ci --prefix tests/clients
//   node tests/clients/authcode.mjs http://127.0.0.1:8080
//   node tests/clients/authcode.mjs http://127.0.0.1:8080 --client-metadata-url https://app.example/client.json
//
// Run by tests/it/interactive_clients.rs against a proxy with `login:` (a static
// account `ada`, password in AUTHMD_PERSON_PASSWORD or the tests' default) and
// `oauth:`, in front of the `builtin:echo` upstream.
//
// What the SDK does itself, as in an MCP host:
// - from the 401 on `POST /mcp`, `extractWWWAuthenticateParams` (resource_metadata,
//   scope); `auth()` then runs RFC 9728 protected-resource discovery, RFC 8414
//   authorization-server discovery, the resource check, and
// - without `--client-metadata-url`: RFC 7591 dynamic client registration (public
//   client, `token_endpoint_auth_method: none`, a loopback redirect_uri);
// - with `--client-metadata-url <https url>`: the URL as client_id (a Client ID
//   Metadata Document), which the SDK uses only when the authorization-server
//   metadata says `client_id_metadata_document_supported: true` (else it silently
//   registers; this script then fails). The document at that URL must name that
//   URL as client_id, list REDIRECT_URI (below) among its redirect_uris and use
//   `token_endpoint_auth_method: none` (the summary carries the metadata the
//   script's provider describes itself with);
// - the authorization request (PKCE S256, state, scope, resource), handed to
//   `redirectToAuthorization`, where person.mjs plays the person: signs in on the
//   static form, allows the consent page, and captures the code from the redirect
//   to the loopback redirect_uri. The SDK leaves the callback to the host: the
//   state and the RFC 9207 `iss` are checked here;
// - `auth()` with the code: the token exchange (code_verifier, redirect_uri,
//   resource);
// - `auth()` again with the tokens stored: it refreshes (the SDK always uses a
//   stored refresh token); the refresh token must have rotated.
// Then `POST /mcp` with the access token: the echo upstream's answer says what it
// saw (the person's principal, scopes and tier, and no Authorization header).
//
// Prints exactly one JSON line on stdout: `{"ok":true,...}` on success, or
// `{"ok":false,"step":...,"error":...}` and a non-zero exit status on any failure.

import { auth, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';

import { baseUrl, expectEqual, fail, run, step, version } from './check.mjs';
import { Person } from './person.mjs';

// A native app's loopback redirect (RFC 8252 §7.3); nothing listens there: the
// person's user agent stops at the redirect and hands over its Location.
export const REDIRECT_URI = 'http://127.0.0.1:33418/callback';
const USERNAME = 'ada';
const PASSWORD = process.env.AUTHMD_PERSON_PASSWORD ?? 'correct horse battery staple';
const CLIENT_METADATA = {
  client_name: 'MCP SDK authorization-code check',
  redirect_uris: [REDIRECT_URI],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
};

function options() {
  const args = process.argv.slice(3);
  const parsed = {};
  for (let i = 0; i < args.length; i += 1) {
    if (args[i] === '--client-metadata-url' && args[i + 1]) {
      parsed.clientMetadataUrl = args[(i += 1)];
    } else {
      fail(`unknown argument ${args[i]}: usage: node authcode.mjs <proxy base url> [--client-metadata-url <https url>]`);
    }
  }
  return parsed;
}

function jwtClaims(token, what) {
  const parts = token.split('.');
  if (parts.length !== 3) fail(`${what}: the access token is not a compact JWT`);
  try {
    return {
      header: JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')),
      claims: JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')),
    };
  } catch (error) {
    return fail(`${what}: the JWT's header or claims are not base64url JSON (${error.message})`);
  }
}

// An MCP host's provider, in memory, with a person at its "browser".
class Provider {
  #client;
  #tokens;
  #verifier;
  #state;
  saved = { clients: [], tokens: [], discovery: undefined };
  authorization = undefined; // { url, callback, steps }

  constructor(person, clientMetadataUrl) {
    this.person = person;
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl;
  }

  get redirectUrl() {
    return REDIRECT_URI;
  }

  get clientMetadata() {
    return CLIENT_METADATA;
  }

  state() {
    this.#state = crypto.randomUUID();
    return this.#state;
  }

  get expectedState() {
    return this.#state;
  }

  clientInformation() {
    return this.#client;
  }

  saveClientInformation(information) {
    this.#client = information;
    this.saved.clients.push(information);
  }

  tokens() {
    return this.#tokens;
  }

  saveTokens(tokens) {
    this.#tokens = tokens;
    this.saved.tokens.push(tokens);
  }

  saveCodeVerifier(verifier) {
    this.#verifier = verifier;
  }

  codeVerifier() {
    if (!this.#verifier) fail('the SDK asked for a code verifier it never saved');
    return this.#verifier;
  }

  saveDiscoveryState(state) {
    this.saved.discovery = state;
  }

  // Later auth() calls start from what the first one discovered, as a host that
  // keeps it does.
  discoveryState() {
    return this.saved.discovery;
  }

  async redirectToAuthorization(url) {
    const { location, steps } = await this.person.authorize(url, REDIRECT_URI);
    this.authorization = { url: new URL(url), callback: location, steps };
  }

  invalidateCredentials(scope) {
    fail(`the SDK invalidated its ${scope} credentials: the server refused something it had accepted`);
  }
}

// A fetch that records what the SDK sent where (methods, paths, form field names
// and the grant type and resource; never a secret).
function recordingFetch(log) {
  return async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : input);
    const entry = { method: init.method ?? 'GET', path: url.pathname };
    if (init.body instanceof URLSearchParams) {
      entry.fields = [...init.body.keys()];
      entry.grant_type = init.body.get('grant_type') ?? undefined;
      entry.resource = init.body.get('resource') ?? undefined;
    }
    const response = await fetch(input, init);
    entry.status = response.status;
    if (url.pathname.endsWith('/token') && response.ok) {
      const body = await response.clone().json();
      entry.returned = Object.keys(body).sort();
    }
    log.push(entry);
    return response;
  };
}

async function main() {
  const base = baseUrl('authcode.mjs', { originOnly: true });
  const { clientMetadataUrl } = options();
  const serverUrl = new URL('/mcp', base);
  const requests = [];
  const fetchFn = recordingFetch(requests);

  const challenge = await step('POST /mcp without a token: 401, extractWWWAuthenticateParams', async () => {
    const response = await fetch(serverUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    });
    await response.body?.cancel();
    expectEqual(response.status, 401, 'POST /mcp without a credential: status');
    const params = extractWWWAuthenticateParams(response);
    if (!params.resourceMetadataUrl) fail(`no resource_metadata in ${response.headers.get('www-authenticate')}`);
    return params;
  });

  const person = new Person({ username: USERNAME, password: PASSWORD });
  const provider = new Provider(person, clientMetadataUrl);
  const authOptions = { serverUrl, resourceMetadataUrl: challenge.resourceMetadataUrl, scope: challenge.scope, fetchFn };

  const first = await step('auth(): discovery, client registration, authorization request (the person signs in and consents)', () =>
    auth(provider, authOptions),
  );
  expectEqual(first, 'REDIRECT', 'auth() without tokens');

  const as = provider.saved.discovery?.authorizationServerMetadata;
  const client = await step('the client the SDK used', async () => {
    if (!as) fail('the SDK saved no authorization-server metadata');
    const information = provider.clientInformation();
    if (!information?.client_id) fail(`the SDK holds no client_id: ${JSON.stringify(information)}`);
    if (clientMetadataUrl) {
      expectEqual(as.client_id_metadata_document_supported, true, 'AS metadata client_id_metadata_document_supported');
      expectEqual(information.client_id, clientMetadataUrl, 'client_id (a Client ID Metadata Document URL)');
      if (requests.some((r) => r.path === new URL(as.registration_endpoint ?? 'http://invalid/').pathname)) {
        fail('the SDK registered although it had a Client ID Metadata Document URL');
      }
      return { kind: 'metadata_document', client_id: information.client_id };
    }
    if (!as.registration_endpoint) fail('the AS metadata has no registration_endpoint');
    const registration = requests.find((r) => r.path === new URL(as.registration_endpoint).pathname);
    expectEqual(registration?.status, 201, 'registration status');
    expectEqual(information.client_secret, undefined, 'a public client got a client_secret');
    expectEqual(information.redirect_uris, [REDIRECT_URI], 'registered redirect_uris');
    expectEqual(information.token_endpoint_auth_method, 'none', 'registered token_endpoint_auth_method');
    return { kind: 'registered', client_id: information.client_id, client_id_issued_at: information.client_id_issued_at };
  });

  const callback = await step('the authorization request and the redirect back (state, RFC 9207 iss)', async () => {
    const { url, callback: location } = provider.authorization ?? fail('the SDK did not redirect to authorization');
    const sent = url.searchParams;
    expectEqual(`${url.origin}${url.pathname}`, as.authorization_endpoint, 'authorization endpoint');
    expectEqual(sent.get('response_type'), 'code', 'response_type');
    expectEqual(sent.get('client_id'), client.client_id, 'client_id');
    expectEqual(sent.get('code_challenge_method'), 'S256', 'code_challenge_method');
    expectEqual(sent.get('redirect_uri'), REDIRECT_URI, 'redirect_uri');
    expectEqual(sent.get('resource'), serverUrl.href, 'resource');
    expectEqual(sent.get('scope'), challenge.scope, 'scope (from the challenge)');
    const back = location.searchParams;
    if (back.get('error')) fail(`the authorization answered ${back.get('error')}: ${back.get('error_description')}`);
    expectEqual(back.get('state'), provider.expectedState, 'state');
    expectEqual(back.get('iss'), as.issuer, 'iss (RFC 9207)');
    const code = back.get('code');
    if (!code) fail(`no code in the redirect to ${location.origin}${location.pathname}`);
    return { code, steps: provider.authorization.steps };
  });

  const exchanged = await step('auth() with the code: token exchange', async () => {
    const result = await auth(provider, { ...authOptions, authorizationCode: callback.code });
    expectEqual(result, 'AUTHORIZED', 'auth() with the code');
    const tokens = provider.tokens();
    if (!tokens?.access_token || !tokens.refresh_token) fail(`tokens lack an access or refresh token: ${Object.keys(tokens ?? {})}`);
    expectEqual(tokens.token_type.toLowerCase(), 'bearer', 'token_type');
    const exchange = requests.findLast((r) => r.grant_type === 'authorization_code');
    expectEqual(exchange?.resource, serverUrl.href, 'the token request resource');
    return tokens;
  });

  const refreshed = await step('auth() again: the stored refresh token is used and rotates', async () => {
    const result = await auth(provider, authOptions);
    expectEqual(result, 'AUTHORIZED', 'auth() with stored tokens');
    const refresh = requests.findLast((r) => r.grant_type === 'refresh_token');
    if (!refresh) fail('auth() did not refresh');
    expectEqual(refresh.status, 200, 'refresh status');
    // The SDK keeps the old refresh token when the answer has none: the answer's
    // own fields say whether the server rotated it.
    if (!refresh.returned?.includes('refresh_token')) fail(`the refresh answer has no refresh_token: ${refresh.returned}`);
    const tokens = provider.tokens();
    if (tokens.refresh_token === exchanged.refresh_token) fail('the refresh token did not rotate');
    if (tokens.access_token === exchanged.access_token) fail('the refresh returned the same access token');
    return tokens;
  });

  const upstream = await step('POST /mcp with the access token: what the upstream saw', async () => {
    const response = await fetch(serverUrl, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${refreshed.access_token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' }),
    });
    const text = await response.text();
    expectEqual(response.status, 200, `POST /mcp status (body ${text.slice(0, 300)})`);
    const echo = JSON.parse(text);
    expectEqual(echo.headers?.authorization, undefined, 'the access token must not reach the upstream');
    return {
      status: response.status,
      method: echo.method,
      path: echo.path,
      principal: echo.headers?.['x-authmd-principal'],
      scopes: echo.headers?.['x-authmd-scopes'],
      tier: echo.headers?.['x-authmd-tier'],
    };
  });

  const jwt = jwtClaims(refreshed.access_token, 'refreshed access token');
  return {
    base: base.href,
    node: process.version,
    '@modelcontextprotocol/sdk': version('@modelcontextprotocol/sdk'),
    issuer: as.issuer,
    client_id_metadata_document_supported: as.client_id_metadata_document_supported ?? false,
    challenge: { resource_metadata: challenge.resourceMetadataUrl?.href, scope: challenge.scope },
    client: { ...client, metadata: CLIENT_METADATA },
    person: { username: USERNAME, steps: callback.steps, cookies: person.cookieNames(base) },
    tokens: {
      token_type: exchanged.token_type,
      scope: exchanged.scope,
      expires_in: exchanged.expires_in,
      refresh_token: exchanged.refresh_token !== undefined,
      issuer_stamped: exchanged.issuer,
    },
    refresh: {
      rotated: refreshed.refresh_token !== exchanged.refresh_token,
      new_access_token: refreshed.access_token !== exchanged.access_token,
      scope: refreshed.scope,
    },
    jwt: {
      typ: jwt.header.typ,
      alg: jwt.header.alg,
      iss: jwt.claims.iss,
      sub: jwt.claims.sub,
      aud: jwt.claims.aud,
      client_id: jwt.claims.client_id,
      scope: jwt.claims.scope,
    },
    requests,
    upstream,
  };
}

await run(main);
