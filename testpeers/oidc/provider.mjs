// A real OpenID Connect provider for elevate's tests: panva's certified
// `oidc-provider`, configured for elevate and with its interactive pages
// replaced by a handler that signs in the user named by `login_hint`, so a
// test plays the browser with a cookie jar and a few redirects.
//
// TEST-ONLY. Never run this anywhere but on 127.0.0.1 in a test: it logs in
// anyone without a password and signs any claims it is asked to
// (`POST /test/sign`).
//
// Usage: node provider.mjs CONFIG.json
// CONFIG.json (relative paths are resolved against the config file's directory):
//   {
//     "port": 43123,                     // listens on 127.0.0.1:port; issuer http://127.0.0.1:port
//     "accountsFile": "accounts.json",   // re-read on every lookup, see below
//     "keysDir": "keys",                 // RSA signing keys, one "<kid>.json" private JWK each
//     "kids": ["k2", "k1"],              // first signs, all are published; missing keys are generated
//     "extraClaims": ["department"],     // extra user claim names released under scope "profile"
//     "webClient": { "id": "elevate-web", "secret": "web-secret",
//                    "redirectUris": ["http://127.0.0.1:8080/auth/callback"] },
//     "cliClient": { "id": "elevate-cli" }  // redirect_uri http://127.0.0.1/callback, any port
//   }
// accounts.json: [ { "sub": "u-1", "username": "alice", "email": "alice@example.com",
//                    "name": "Alice", "groups": ["sre"], "claims": { "department": "sre" } } ]
//   `email_verified` is true unless a user's "claims" say otherwise; "claims"
//   are released last, so they can override any other claim.
//
// Prints `ready <issuer>` on stdout once listening; errors go to stderr.
//
// Behaviour worth knowing:
// - PKCE S256 is required for every client; both clients require auth_time.
// - Access tokens for the default resource `urn:elevate:api` are RS256 JWTs
//   (audience `urn:elevate:api`) carrying preferred_username, email, groups
//   and the extra claims. They are therefore not accepted at userinfo.
// - acr/amr: `urn:elevate:mfa` + ["pwd","otp"] when the authorization request's
//   acr_values contain `urn:elevate:mfa`, else `urn:elevate:pwd` + ["pwd"].
//   An existing session is reused as is (acr_values alone does not force a
//   step-up); prompt=login or max_age force a fresh login.
// - A request whose login_hint names someone other than the signed-in user
//   signs the previous user out and the named one in.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

import Provider, { interactionPolicy } from 'oidc-provider';

const API_RESOURCE = 'urn:elevate:api';
const ACR_PASSWORD = 'urn:elevate:pwd';
const ACR_MFA = 'urn:elevate:mfa';
const CLI_REDIRECT_URI = 'http://127.0.0.1/callback';

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function readConfig() {
  const file = process.argv[2];
  if (!file) fail('usage: node provider.mjs CONFIG.json');
  let config;
  try {
    config = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    fail(`reading ${file}: ${error.message}`);
  }
  const base = path.dirname(path.resolve(file));
  const resolve = (p) => path.resolve(base, p);
  for (const key of ['port', 'accountsFile', 'keysDir', 'kids', 'webClient', 'cliClient']) {
    if (config[key] === undefined) fail(`config misses "${key}"`);
  }
  if (!Array.isArray(config.kids) || config.kids.length === 0) fail('"kids" must name at least one key');
  return {
    ...config,
    accountsFile: resolve(config.accountsFile),
    keysDir: resolve(config.keysDir),
    extraClaims: config.extraClaims ?? [],
  };
}

const config = readConfig();
const issuer = `http://127.0.0.1:${config.port}`;

// ---- signing keys --------------------------------------------------------

function loadOrCreateKey(kid) {
  if (!/^[A-Za-z0-9._-]+$/.test(kid)) fail(`kid ${JSON.stringify(kid)} is not a safe file name`);
  const file = path.join(config.keysDir, `${kid}.json`);
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
  fs.mkdirSync(config.keysDir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

const signingJwks = config.kids.map(loadOrCreateKey);

// ---- accounts ------------------------------------------------------------

// Re-read on every lookup so a test can change a user between sign-ins.
function readUsers() {
  const users = JSON.parse(fs.readFileSync(config.accountsFile, 'utf8'));
  if (!Array.isArray(users)) throw new Error(`${config.accountsFile} must hold a JSON array`);
  return users;
}

function findUserBySub(sub) {
  return readUsers().find((user) => user.sub === sub);
}

function findUserByHint(hint) {
  const wanted = String(hint).toLowerCase();
  return readUsers().find(
    (user) => user.sub === hint || String(user.username).toLowerCase() === wanted,
  );
}

function userClaims(user) {
  return {
    sub: user.sub,
    preferred_username: user.username,
    name: user.name,
    email: user.email,
    email_verified: true,
    groups: user.groups ?? [],
    ...(user.claims ?? {}),
  };
}

// ---- the provider --------------------------------------------------------

// login_hint naming someone else than the signed-in user requires a login.
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'login_hint_other_user',
  'login_hint names another user than the signed-in one',
  (ctx) => {
    const { oidc } = ctx;
    if (!oidc.params.login_hint || !oidc.session.accountId) {
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }
    const user = findUserByHint(oidc.params.login_hint);
    return user?.sub === oidc.session.accountId
      ? interactionPolicy.Check.NO_NEED_TO_PROMPT
      : interactionPolicy.Check.REQUEST_PROMPT;
  },
));

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.webClient.id,
      client_secret: config.webClient.secret,
      application_type: 'web',
      redirect_uris: config.webClient.redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'client_secret_basic',
      require_auth_time: true,
    },
    {
      client_id: config.cliClient.id,
      application_type: 'native',
      // RFC 8252 §7.3: oidc-provider accepts any port on a loopback
      // redirect URI of a native client.
      redirect_uris: config.cliClient.redirectUris ?? [CLI_REDIRECT_URI],
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'none',
      require_auth_time: true,
    },
  ],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
  jwks: { keys: signingJwks },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    // acr and amr under "openid": released in every ID token, not only when
    // asked for through the claims parameter.
    openid: ['sub', 'acr', 'amr'],
    profile: ['preferred_username', 'name', ...config.extraClaims],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    acr: null,
    amr: null,
    auth_time: null,
    sid: null,
  },
  conformIdTokenClaims: false,
  acrValues: [ACR_PASSWORD, ACR_MFA],
  async findAccount(_ctx, sub) {
    const user = findUserBySub(sub);
    if (!user) return undefined;
    return { accountId: user.sub, claims: async () => userClaims(user) };
  },
  async extraTokenClaims(_ctx, token) {
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const user = findUserBySub(token.accountId);
    if (!user) return undefined;
    const { sub: _sub, name: _name, email_verified: _verified, ...claims } = userClaims(user);
    return claims;
  },
  interactions: {
    policy,
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => API_RESOURCE,
      // Without this, a code for scope openid gets an opaque userinfo token.
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, resource) {
        if (resource !== API_RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'profile email groups',
          audience: API_RESOURCE,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  renderError(ctx, out) {
    ctx.type = 'text/plain';
    ctx.body = Object.entries(out).map(([key, value]) => `${key}: ${value}`).join('\n');
  },
});

provider.on('server_error', (_ctx, error) => {
  process.stderr.write(`server_error: ${error.stack ?? error}\n`);
});

// ---- the interaction handler (replaces the login and consent pages) ------

function reply(res, status, text) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(`${text}\n`);
}

async function login(req, res, interaction) {
  const hint = interaction.params.login_hint;
  if (!hint) {
    reply(res, 400, 'test provider: the authorization request needs login_hint=<username or sub>');
    return;
  }
  const user = findUserByHint(hint);
  if (!user) {
    reply(res, 400, `test provider: no user ${JSON.stringify(hint)} in ${config.accountsFile}`);
    return;
  }
  // Someone else is signed in: end that session here, as a real user
  // signing out first would, instead of oidc-provider's logout confirmation
  // page (which needs a browser to submit).
  if (interaction.session?.accountId && interaction.session.accountId !== user.sub) {
    const previous = await provider.Session.findByUid(interaction.session.uid);
    await previous?.destroy();
    interaction.session = undefined;
    await interaction.save(interaction.exp - Math.floor(Date.now() / 1000));
  }
  const acrValues = String(interaction.params.acr_values ?? '').split(' ');
  const mfa = acrValues.includes(ACR_MFA);
  await provider.interactionFinished(req, res, {
    login: {
      accountId: user.sub,
      acr: mfa ? ACR_MFA : ACR_PASSWORD,
      amr: mfa ? ['pwd', 'otp'] : ['pwd'],
      ts: Math.floor(Date.now() / 1000),
      remember: true,
    },
  }, { mergeWithLastSubmission: false });
}

async function consent(req, res, interaction) {
  const { prompt: { details }, params, session, grantId } = interaction;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, {
    mergeWithLastSubmission: true,
  });
}

async function handleInteraction(req, res) {
  if (req.method !== 'GET') {
    reply(res, 405, 'test provider: GET only');
    return;
  }
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (error) {
    reply(res, 400, `test provider: ${error.message} (keep the cookies between redirects)`);
    return;
  }
  switch (interaction.prompt.name) {
    case 'login':
      await login(req, res, interaction);
      break;
    case 'consent':
      await consent(req, res, interaction);
      break;
    default:
      reply(res, 501, `test provider: prompt ${interaction.prompt.name} is not handled`);
  }
}

// ---- TEST-ONLY: sign arbitrary claims -------------------------------------

// An RSA key that is in no JWKS, for "signed by someone else" tests.
let untrustedKey;

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

// Signs `claims` as a compact JWS. The header defaults to RS256 with the
// current signing key's kid; `header` overrides any of it:
// - `kid` of another published key signs with that key (say, a retired one);
//   an unknown kid is only written in the header (signed with the current key).
// - `alg`: RS256/RS384/RS512, PS256/PS384/PS512 sign with the RSA key;
//   HS256/HS384/HS512 use the public key's PEM (SPKI) as the HMAC secret, the
//   classic algorithm-confusion attack; `none` leaves the signature empty.
// `untrusted: true` signs with a key that is not published at all.
function signTestToken({ claims = {}, header = {}, untrusted = false }) {
  let jwk;
  if (untrusted) {
    untrustedKey ??= crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    jwk = { kid: 'untrusted' };
  } else {
    jwk = signingJwks.find((key) => key.kid === header.kid) ?? signingJwks[0];
  }
  const fullHeader = { alg: 'RS256', typ: 'JWT', kid: jwk.kid, ...header };
  const privateKey = untrusted ? untrustedKey : crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const input = `${base64url(fullHeader)}.${base64url(claims)}`;
  const { alg } = fullHeader;
  const bits = String(alg).slice(2);
  let signature;
  if (alg === 'none') {
    signature = Buffer.alloc(0);
  } else if (/^RS(256|384|512)$/.test(alg)) {
    signature = crypto.sign(`sha${bits}`, Buffer.from(input), privateKey);
  } else if (/^PS(256|384|512)$/.test(alg)) {
    signature = crypto.sign(`sha${bits}`, Buffer.from(input), {
      key: privateKey,
      padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
      saltLength: Number(bits) / 8,
    });
  } else if (/^HS(256|384|512)$/.test(alg)) {
    const secret = crypto.createPublicKey(privateKey).export({ format: 'pem', type: 'spki' });
    signature = crypto.createHmac(`sha${bits}`, secret).update(input).digest();
  } else {
    throw new Error(`alg ${alg} is not supported by /test/sign`);
  }
  return `${input}.${signature.toString('base64url')}`;
}

async function handleTestSign(req, res) {
  if (req.method !== 'POST') {
    reply(res, 405, 'test provider: POST only');
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  let token;
  try {
    token = signTestToken(JSON.parse(Buffer.concat(chunks).toString('utf8')));
  } catch (error) {
    reply(res, 400, `test provider: ${error.message}`);
    return;
  }
  reply(res, 200, token);
}

// ---- the server -----------------------------------------------------------

const oidc = provider.callback();
const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, issuer);
  let handled;
  if (pathname.startsWith('/interaction/')) {
    handled = handleInteraction(req, res);
  } else if (pathname === '/test/sign') {
    handled = handleTestSign(req, res);
  } else {
    oidc(req, res);
    return;
  }
  handled.catch((error) => {
    process.stderr.write(`${req.method} ${req.url}: ${error.stack ?? error}\n`);
    if (!res.headersSent) reply(res, 500, `test provider: ${error.message}`);
    else res.end();
  });
});

server.on('error', (error) => fail(`listening on 127.0.0.1:${config.port}: ${error.code ?? error.message}`));
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
