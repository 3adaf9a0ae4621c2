// A real OpenID Connect provider for the ENRS test suite.
//
// It runs panva/oidc-provider (a certified OpenID Provider implementation) with:
//   * one confidential client (authorization code flow, PKCE S256 required,
//     client_secret_basic by default or client_secret_post),
//   * a fixed list of test accounts that log in with a login + password form,
//   * the RPPS number of each account in the `SubjectNameID` claim (the claim
//     Pro Santé Connect uses), released with the `openid` scope (ID token and UserInfo),
//   * a fresh RSA signing key (RS256, random `kid`) on every start, unless keys are given.
//
// Configuration: one JSON object, read from the OIDC_PROVIDER_CONFIG environment
// variable, or from a file given as `node provider.mjs --config path/to/config.json`.
//
//   {
//     "port": 0,                         // 0 = let the OS choose a free port
//     "host": "127.0.0.1",
//     "issuer": "http://127.0.0.1:PORT",  // optional, defaults to http://HOST:PORT
//     "client": {
//       "client_id": "enrs",
//       "client_secret": "secret",
//       "redirect_uris": ["http://127.0.0.1:8000/auth/psc/callback"],
//       "post_logout_redirect_uris": [],                 // optional
//       "token_endpoint_auth_method": "client_secret_basic" // or client_secret_post
//     },
//     "accounts": [
//       {"id": "dr.house", "password": "pw", "rpps": "810000000001",
//        "given_name": "Gregory", "family_name": "House", "email": "...", "claims": {}}
//     ],
//     "consent": "auto",            // "auto" (no consent page) or "form" (consent page)
//     "rpps_claim": "SubjectNameID",
//     "rpps_in_id_token": true,     // true: the RPPS claim belongs to the openid scope, so it is
//                                   // in the ID token and UserInfo; false: profile scope,
//                                   // UserInfo only
//     "id_token_claims": false,     // true: all scope claims (names...) also in the ID token
//     "userinfo": true,             // false: no userinfo endpoint
//     "jwks": {"keys": [...]}       // optional private signing JWKs (with kid); default: a
//                                   // fresh RSA key (RS256, random kid) on every start
//   }
//
// When listening it prints one line to stdout:
//   ENRS_OIDC_PROVIDER_READY {"issuer":"http://127.0.0.1:PORT","port":PORT}
//
// Pages (for browsers and for plain HTTP clients):
//   GET  /interaction/:uid          login page (form#login-form: input[name=login],
//                                   input[name=password], button#login-submit) or
//                                   consent page (form#consent-form, button#consent-submit)
//   POST /interaction/:uid/login    checks the password; on failure the login page comes back
//                                   with p#login-error
//   POST /interaction/:uid/confirm  grants the requested scopes and claims
//   POST /interaction/:uid/abort    form#cancel-form / button#cancel: the relying party gets
//                                   ?error=access_denied

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { Provider } from 'oidc-provider';

const READY_PREFIX = 'ENRS_OIDC_PROVIDER_READY';

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function readConfig() {
  const args = process.argv.slice(2);
  let raw;
  const flag = args.indexOf('--config');
  if (flag !== -1) {
    const file = args[flag + 1];
    if (!file) fail('--config needs a file name');
    raw = readFileSync(file, 'utf8');
  } else if (process.env.OIDC_PROVIDER_CONFIG) {
    raw = process.env.OIDC_PROVIDER_CONFIG;
  } else {
    fail('no configuration: set OIDC_PROVIDER_CONFIG (JSON) or pass --config FILE');
  }
  let config;
  try {
    config = JSON.parse(raw);
  } catch (err) {
    fail(`configuration is not valid JSON: ${err.message}`);
  }
  const { client, accounts } = config;
  if (!client || typeof client.client_id !== 'string' || typeof client.client_secret !== 'string'
      || !Array.isArray(client.redirect_uris) || client.redirect_uris.length === 0) {
    fail('config.client needs client_id, client_secret and a non-empty redirect_uris list');
  }
  if (!Array.isArray(accounts)) fail('config.accounts must be a list');
  for (const account of accounts) {
    if (typeof account.id !== 'string' || typeof account.password !== 'string') {
      fail('every account needs a string id and password');
    }
  }
  if (config.consent !== undefined && !['auto', 'form'].includes(config.consent)) {
    fail('config.consent must be "auto" or "form"');
  }
  return config;
}

const config = readConfig();
const host = config.host ?? '127.0.0.1';
const rppsClaim = config.rpps_claim ?? 'SubjectNameID';
const consentMode = config.consent ?? 'auto';
const rppsInIdToken = config.rpps_in_id_token ?? true;
const accounts = new Map(config.accounts.map((account) => [account.id, account]));

function accountClaims(account) {
  const claims = {
    sub: account.id,
    preferred_username: account.id,
    ...(account.rpps !== undefined ? { [rppsClaim]: account.rpps } : {}),
    ...(account.given_name !== undefined ? { given_name: account.given_name } : {}),
    ...(account.family_name !== undefined ? { family_name: account.family_name } : {}),
    ...(account.email !== undefined ? { email: account.email, email_verified: true } : {}),
    ...(account.claims ?? {}),
  };
  if (account.given_name !== undefined || account.family_name !== undefined) {
    claims.name = [account.given_name, account.family_name].filter(Boolean).join(' ');
  }
  return claims;
}

function passwordMatches(account, password) {
  // Hash both sides so that timingSafeEqual gets buffers of the same length.
  const digest = (value) => crypto.createHash('sha256').update(String(value), 'utf8').digest();
  return crypto.timingSafeEqual(digest(account.password), digest(password));
}

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: crypto.randomBytes(12).toString('base64url'),
    alg: 'RS256',
    use: 'sig',
  };
}

// --- HTML --------------------------------------------------------------------------------------

function esc(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${esc(title)}</title>
  <style>
    body { font-family: sans-serif; max-width: 28rem; margin: 3rem auto; }
    label, input, button { display: block; margin: 0.4rem 0; }
    input { width: 100%; padding: 0.4rem; }
    .error { color: #b00020; }
  </style>
</head>
<body>
  <h1>${esc(title)}</h1>
${body}
</body>
</html>`;
}

function cancelForm(uid) {
  return `  <form id="cancel-form" method="post" action="/interaction/${esc(uid)}/abort">
    <button id="cancel" type="submit">Cancel</button>
  </form>`;
}

function loginPage({ uid, clientId, loginHint, error }) {
  return page('Test identity provider: sign in', `  <p>Signing in to <strong id="client-id">${esc(clientId)}</strong>.</p>
${error ? `  <p id="login-error" class="error" role="alert">${esc(error)}</p>\n` : ''}  <form id="login-form" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
    <label for="login">Login</label>
    <input id="login" name="login" type="text" required autofocus value="${esc(loginHint ?? '')}">
    <label for="password">Password</label>
    <input id="password" name="password" type="password" required>
    <button id="login-submit" type="submit">Sign in</button>
  </form>
${cancelForm(uid)}`);
}

function consentPage({ uid, clientId, scopes, claims }) {
  const items = [...scopes.map((s) => `scope ${s}`), ...claims.map((c) => `claim ${c}`)]
    .map((item) => `    <li>${esc(item)}</li>`).join('\n');
  return page('Test identity provider: authorize', `  <p><strong id="client-id">${esc(clientId)}</strong> asks for:</p>
  <ul id="consent-details">
${items}
  </ul>
  <form id="consent-form" method="post" action="/interaction/${esc(uid)}/confirm">
    <button id="consent-submit" type="submit">Allow</button>
  </form>
${cancelForm(uid)}`);
}

// --- provider ----------------------------------------------------------------------------------

const client = {
  client_id: config.client.client_id,
  client_secret: config.client.client_secret,
  redirect_uris: config.client.redirect_uris,
  post_logout_redirect_uris: config.client.post_logout_redirect_uris ?? [],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: config.client.token_endpoint_auth_method ?? 'client_secret_basic',
};

async function grantFor(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (consentMode !== 'auto' || !oidc.session.accountId) {
    return grant;
  }
  // Auto consent: the test client gets whatever it asks for, no consent page.
  grant ??= new oidc.provider.Grant({
    clientId: oidc.client.clientId,
    accountId: oidc.session.accountId,
  });
  grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
  grant.addOIDCClaims([...oidc.requestParamClaims]);
  await grant.save();
  return grant;
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [client],
    jwks: config.jwks ?? { keys: [newSigningKey()] },
    cookies: {
      keys: [crypto.randomBytes(32).toString('base64url')],
      // Cookies ignore ports: distinct names keep clear of the relying party's cookies when
      // both run on 127.0.0.1.
      names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' },
    },
    claims: {
      openid: rppsInIdToken ? ['sub', rppsClaim] : ['sub'],
      profile: [
        'given_name', 'family_name', 'name', 'preferred_username',
        ...(rppsInIdToken ? [] : [rppsClaim]),
      ],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'profile', 'email'],
    responseTypes: ['code'],
    pkce: { required: () => true },
    ttl: {
      AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Grant: 3600,
      Session: 3600,
    },
    conformIdTokenClaims: !config.id_token_claims,
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: config.userinfo ?? true },
      rpInitiatedLogout: { enabled: true },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    loadExistingGrant: grantFor,
    async findAccount(ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return accountClaims(account);
        },
      };
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Test identity provider: error', `  <p id="error" class="error">${esc(out.error)}</p>
  <p id="error-description">${esc(out.error_description ?? '')}</p>`);
    },
  });

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error']) {
    provider.on(event, (ctx, err) => {
      process.stderr.write(`provider.mjs ${event}: ${err?.message ?? err} ${err?.error_description ?? ''}\n`);
    });
  }

  provider.use(interactionRoutes(provider));
  return provider;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function interactionRoutes(provider) {
  const pattern = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/;
  return async function interactions(ctx, next) {
    const match = pattern.exec(ctx.path);
    if (!match) {
      await next();
      return;
    }
    const [, uid, action] = match;
    ctx.set('Cache-Control', 'no-store');
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Test identity provider: error', `  <p id="error" class="error">${esc(err.name ?? 'error')}: ${esc(err.message)}</p>`);
      return;
    }
    if (details.uid !== uid) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Test identity provider: error', '  <p id="error" class="error">interaction mismatch</p>');
      return;
    }
    const { prompt, params, grantId, session } = details;
    ctx.type = 'html';

    if (!action && ctx.method === 'GET') {
      if (prompt.name === 'login') {
        ctx.body = loginPage({ uid, clientId: params.client_id, loginHint: params.login_hint });
      } else if (prompt.name === 'consent') {
        ctx.body = consentPage({
          uid,
          clientId: params.client_id,
          scopes: prompt.details.missingOIDCScope ?? [],
          claims: prompt.details.missingOIDCClaims ?? [],
        });
      } else {
        ctx.throw(501, `prompt ${prompt.name} not implemented`);
      }
      return;
    }
    if (ctx.method !== 'POST' || !action) {
      ctx.throw(405);
    }
    ctx.respond = false; // interactionFinished writes the 303 response itself
    if (action === 'abort') {
      await provider.interactionFinished(ctx.req, ctx.res, {
        error: 'access_denied',
        error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
      return;
    }
    const form = await readForm(ctx.req);
    if (action === 'login') {
      if (prompt.name !== 'login') ctx.throw(400, 'not at the login prompt');
      const login = form.get('login') ?? '';
      const account = accounts.get(login);
      if (!account || !passwordMatches(account, form.get('password') ?? '')) {
        ctx.respond = true;
        ctx.status = 200;
        ctx.type = 'html';
        ctx.body = loginPage({
          uid, clientId: params.client_id, loginHint: login, error: 'Invalid login or password.',
        });
        return;
      }
      await provider.interactionFinished(ctx.req, ctx.res, {
        login: { accountId: account.id },
      }, { mergeWithLastSubmission: false });
      return;
    }
    // action === 'confirm'
    if (prompt.name !== 'consent') ctx.throw(400, 'not at the consent prompt');
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    if (prompt.details.missingOIDCClaims) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    await provider.interactionFinished(ctx.req, ctx.res, {
      consent: { grantId: await grant.save() },
    }, { mergeWithLastSubmission: true });
  };
}

// --- start -------------------------------------------------------------------------------------

const server = http.createServer();
server.on('error', (err) => fail(`cannot listen on ${host}:${config.port ?? 0}: ${err.message}`));
server.listen(config.port ?? 0, host, () => {
  const { port } = server.address();
  const issuer = config.issuer ?? `http://${host}:${port}`;
  const provider = buildProvider(issuer);
  server.on('request', provider.callback());
  process.stdout.write(`${READY_PREFIX} ${JSON.stringify({ issuer, port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
