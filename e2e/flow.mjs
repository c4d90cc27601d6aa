// elevate's web application, end to end, in a real browser: Debian's
// Chromium driven by playwright-core against a running elevate and a real
// OpenID provider (both started by crates/server/tests/it/web_e2e.rs).
//
// People (one browser context each): alice requests, bob approves (also
// once with JavaScript disabled), dave audits (group "security").
//
// Environment:
//   ELEVATE_URL      elevate's base URL (required)
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
//   SCREENSHOT_DIR   where the PNGs of every page go (required)
//   E2E_HEADFUL=1    show the browser (debugging only)
//
// Accessibility: every main page, once the flow has produced data, is
// audited with axe-core (WCAG 2.0/2.1 A and AA rules) in browser contexts of
// its own (see `auditor`); a serious or critical violation fails the run,
// moderate and minor ones are printed as warnings. The request form is also
// walked with the keyboard alone (skip link, Tab order, Enter to submit).
//
// Exits 0 when every step passed. The last line of stdout is
// `E2E-RESULT {json}` with the request ids, for the server-side checks of
// the Rust test. On failure: the failing step, the page's URL, a screenshot
// `FAILED-<step>.png` and the page's text.

import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const BASE = requiredEnv('ELEVATE_URL').replace(/\/$/, '');
const SHOTS = requiredEnv('SCREENSHOT_DIR');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(SHOTS, { recursive: true });

// Hostile justifications: markup that must show as text and never run.
const J1 = '<script>alert(1)</script> 本番DBの障害対応';
const J2 = '"><img src=x onerror="window.__xss=1"> <b>bold</b> & \'quotes\'';
const J3 = 'Rotate the replica password </textarea><script>window.__xss=3</script>';
const J4 = 'Wrong resource, cancelling <svg onload="window.__xss=4">';

const started = Date.now();
const timings = [];
const problems = []; // failures seen by listeners (alerts, page errors, CSP)
const bugs = []; // failures the flow could work around: reported, and the run fails at its end

const bugKeys = new Set();
function bugOnce(key, what) {
  if (bugKeys.has(key)) return;
  bugKeys.add(key);
  bug(current.step, what);
}

/// A failure the rest of the flow can go on without: reported at the end.
function bug(where, what) {
  bugs.push({ step: where, bug: what });
  log(`  BUG (reported at the end): ${what}`);
}
let current = { step: '(start)', page: null };

function requiredEnv(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return v;
}

function log(msg) {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`[${t}s] ${msg}`);
}

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

/// Runs one named step; records its time; on failure keeps evidence.
async function step(name, page, fn) {
  current = { step: name, page };
  const t0 = Date.now();
  log(`▶ ${name}`);
  const out = await fn();
  const ms = Date.now() - t0;
  timings.push({ step: name, ms });
  log(`✔ ${name} (${ms} ms)`);
  if (problems.length) throw new Error(`problems seen: ${problems.join('; ')}`);
  return out;
}

/// Polls `fn` until it returns a truthy value (navigations in between are
/// fine: errors from a page being replaced are retried).
async function until(what, fn, timeoutMs = 10000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  log(`  screenshot ${name}.png`);
}

// ---- the browser and its people -------------------------------------------

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: process.env.E2E_HEADFUL !== '1',
  // Playwright gives every launch a fresh temporary profile (the
  // --user-data-dir) and, with chromiumSandbox false (the default),
  // --no-sandbox. The rest keeps Chromium off the (closed) network.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-proxy-server',
  ],
  timeout: 30000,
});

const contexts = [];

/// A person with their own browser context (cookies), signed in through
/// the real provider with `login_hint`.
async function person(name, { javaScriptEnabled = true } = {}) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    javaScriptEnabled,
    locale: 'en-GB',
    timezoneId: 'Europe/Berlin',
  });
  contexts.push(context);
  context.setDefaultTimeout(10000);
  context.setDefaultNavigationTimeout(15000);
  const who = `${name}${javaScriptEnabled ? '' : ' (no JS)'}`;
  const p = { name: who, context, confirms: 0, page: null, newPage: null };
  p.newPage = async () => {
    const page = await context.newPage();
    watchPage(page, p);
    return page;
  };
  p.page = await p.newPage();
  return p;
}

function watchPage(page, p) {
  page.on('dialog', async (d) => {
    if (d.type() === 'confirm') {
      p.confirms += 1;
      log(`  ${p.name}: confirm dialog "${d.message()}" accepted`);
      await d.accept();
    } else {
      problems.push(`${p.name}: a ${d.type()} dialog appeared ("${d.message()}") on ${page.url()}`);
      await d.dismiss().catch(() => {});
    }
  });
  page.on('pageerror', (e) => problems.push(`${p.name}: page error on ${page.url()}: ${e.message}`));
  page.on('console', (m) => {
    // A CSP violation (an inline script or handler that tried to run) is
    // logged as a console error: our pages should have none.
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) {
      if (/connect-src/.test(m.text()) && /\/auth\?response_type=code/.test(m.text())) {
        // app.js's poll of /live/... without a session (signed out in
        // another tab) is redirected to sign in, i.e. to the provider.
        bugOnce('live-poll-signed-out',
          `after signing out, a page still open polls its /live/... URL every 3 s; without a session that URL answers ` +
          `303 to /auth/login, which redirects the fetch to the identity provider (blocked by "connect-src 'self'", ` +
          `and each poll starts a new sign-in at the provider). Page: ${page.url()}. Console: ${m.text().slice(0, 160)}…`);
      } else {
        problems.push(`${p.name}: ${m.text()} on ${page.url()}`);
      }
    }
  });
  page.on('response', (r) => {
    // Every HTML page elevate serves carries the Content-Security-Policy.
    if (!r.url().startsWith(BASE) || r.request().resourceType() !== 'document') return;
    const status = r.status();
    if (status >= 300 && status < 400) return;
    const csp = r.headers()['content-security-policy'] || '';
    if (!/script-src 'self'/.test(csp) || /unsafe-inline/.test(csp)) {
      problems.push(`${p.name}: ${r.url()} (${status}) has no strict Content-Security-Policy: "${csp}"`);
    }
    pagesChecked.add(new URL(r.url()).pathname.replace(/\/requests\/[^/]+/, '/requests/{id}'));
  });
}
const pagesChecked = new Set();

/// Navigates and expects `status` (200 by default).
async function visit(page, path, status = 200) {
  current.page = page;
  const resp = await page.goto(BASE + path, { waitUntil: 'load' });
  check(resp, `no response for ${path}`);
  check(resp.status() === status, `${path} answered ${resp.status()}, expected ${status}`);
  await noScriptRan(page);
  return resp;
}

/// The hostile justifications ran nowhere: no marker, no extra scripts.
async function noScriptRan(page) {
  const r = await page.evaluate(() => ({
    xss: window.__xss,
    scripts: [...document.scripts].map((s) => s.getAttribute('src') || `inline:${s.textContent.slice(0, 60)}`),
    imgs: [...document.images].map((i) => i.getAttribute('src')),
    handlers: [...document.querySelectorAll('*')]
      .flatMap((el) => [...el.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${el.tagName}[${a.name}]`)),
    text: document.body ? document.body.textContent : '',
  })).catch((e) => { log(`  could not inspect ${page.url()}: ${e.message}`); return null; });
  if (!r) return;
  check(r.xss === undefined, `window.__xss is ${r.xss} on ${page.url()}`);
  check(r.scripts.every((s) => s === '/static/app.js'), `unexpected scripts on ${page.url()}: ${JSON.stringify(r.scripts)}`);
  check(!r.imgs.includes('x'), `an injected <img> was parsed on ${page.url()}`);
  check(r.handlers.length === 0, `event handler attributes on ${page.url()}: ${r.handlers}`);
  // Wherever the first justification shows, it shows whole, as text.
  check(!r.text.includes('alert(1)') || r.text.includes(J1), `${page.url()} shows the justification mangled: ${r.text.slice(r.text.indexOf('alert(1)') - 40, r.text.indexOf('alert(1)') + 60)}`);
}

/// The page shows `text` literally (as text, not markup).
async function showsLiterally(page, text, where = 'body') {
  const content = await page.locator(where).first().textContent();
  check(content.includes(text), `${page.url()} ${where} does not show ${JSON.stringify(text)} literally; it shows: ${content.replace(/\s+/g, ' ').slice(0, 600)}`);
}

async function signIn(p, next) {
  const resp = await p.page.goto(`${BASE}/auth/login?login_hint=${encodeURIComponent(p.name.split(' ')[0])}&next=${encodeURIComponent(next)}`);
  check(resp && resp.ok(), `sign-in of ${p.name} ended with ${resp && resp.status()} at ${p.page.url()}`);
  check(new URL(p.page.url()).pathname === next.split('?')[0], `${p.name} came back at ${p.page.url()}, not ${next}`);
}

async function stateOf(page) {
  return ((await page.locator('#state').first().textContent()) || '').trim();
}

async function requestIdOf(page) {
  const m = new URL(page.url()).pathname.match(/^\/requests\/([^/]+)$/);
  check(m, `not on a request's page: ${page.url()}`);
  return decodeURIComponent(m[1]);
}

/// Fills and submits the request form reached from /request.
async function requestAccess(page, { q, resource, role, duration, reason, ticket }) {
  current.page = page;
  await visit(page, '/request');
  await page.fill('input[name=q]', q);
  await Promise.all([page.waitForURL(/\/request\?.*q=/), page.getByRole('button', { name: 'Filter' }).click()]);
  const link = page.locator(`a.request-link[href*="resource=${resource}&"][href*="role=${role}"]`).first();
  await link.waitFor();
  await Promise.all([page.waitForURL(/\/request\/new\?/), link.click()]);
  await page.fill('#duration', duration);
  await page.fill('#reason', reason);
  if (ticket) await page.fill('#ticket', ticket);
  await Promise.all([page.waitForURL(/\/requests\/[^/?]+(\?.*)?$/), page.getByRole('button', { name: 'Submit request' }).click()]);
  await noScriptRan(page);
  return requestIdOf(page);
}

/// bob's way to a request: /approvals, the row that links to it.
async function openFromApprovals(page, id, reason) {
  current.page = page;
  await visit(page, '/approvals');
  const link = page.locator(`a[href^="/requests/${id}"]`).first();
  await link.waitFor();
  const row = page.locator('tr, li, article').filter({ has: link }).last();
  await showsLiterally(page, reason);
  await Promise.all([page.waitForURL(new RegExp(`/requests/${id}(\\?.*)?$`)), link.click()]);
  check((await stateOf(page)) === 'pending', `request ${id} is ${await stateOf(page)}, not pending`);
  return row;
}

async function decide(page, button, comment) {
  await page.fill('textarea[name=comment]', comment);
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: button, exact: true }).click()]);
  await noScriptRan(page);
}

// ---- accessibility audit (axe-core) -------------------------------------------

const AXE_PATH = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
const a11yAudited = []; // labels of the pages audited
const a11yWarnings = []; // moderate and minor violations: printed, not fatal

/// A person's browser context for the accessibility audit ONLY. The pages'
/// strict Content-Security-Policy (script-src 'self') would refuse axe's
/// injected script, so this context is created with `bypassCSP: true`. The
/// product is not weakened for it: the policy is still sent, every step of
/// the flow runs in the ordinary contexts of `person`, which enforce it (and
/// check that every page sends it), and nothing but `audit` and the keyboard
/// check uses these contexts. Signed in the way the flow signs people in
/// (`signIn`), unless `name` is null (signed out).
async function auditor(name, next = '/') {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    locale: 'en-GB',
    timezoneId: 'Europe/Berlin',
    bypassCSP: true, // for injecting axe-core; used for the audit only (see above)
  });
  contexts.push(context);
  context.setDefaultTimeout(15000);
  context.setDefaultNavigationTimeout(15000);
  const a = { name: name ? `${name} (a11y)` : 'signed out (a11y)', context, page: await context.newPage() };
  a.page.on('pageerror', (e) => problems.push(`${a.name}: page error on ${a.page.url()}: ${e.message}`));
  a.page.on('dialog', async (d) => {
    problems.push(`${a.name}: a ${d.type()} dialog appeared ("${d.message()}") on ${a.page.url()}`);
    await d.dismiss().catch(() => {});
  });
  if (name) await signIn(a, next);
  return a;
}

/// Runs axe-core on the page `a` shows after visiting `path` (or on the
/// page as it is, with `path` null). Serious and critical violations are
/// bugs (the run fails at its end, after auditing every page); the others
/// are printed as warnings.
async function audit(a, path, label = path, status = 200) {
  const page = a.page;
  current.page = page;
  if (path !== null) {
    const resp = await page.goto(BASE + path, { waitUntil: 'load' });
    check(resp && resp.status() === status, `${path} answered ${resp && resp.status()} to ${a.name}, expected ${status}`);
  }
  let results;
  for (let attempt = 1; ; attempt += 1) {
    try {
      if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: AXE_PATH });
      results = await page.evaluate((values) => window.axe.run(document, { runOnly: { type: 'tag', values } }), AXE_TAGS);
      break;
    } catch (e) {
      // A request's page reloads itself when the request changes (app.js).
      if (attempt >= 3 || !/context was destroyed|navigat/i.test(e.message)) throw e;
      log(`  ${page.url()} reloaded during the audit; auditing it again`);
      await page.waitForLoadState('load');
    }
  }
  a11yAudited.push(label);
  const fatal = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const where = `${label} (${a.name}, ${new URL(page.url()).pathname})`;
  log(`  axe ${where}: ${results.passes.length} rules pass, ${results.violations.length} violated` +
    `${fatal.length ? ` (${fatal.length} serious or critical)` : ''}` +
    `${results.incomplete.length ? `; to review by hand: ${results.incomplete.map((i) =>
      `${i.id} (${i.nodes.length}: ${i.nodes.slice(0, 2).map((n) => n.target.join(' ')).join(', ')}${i.nodes.length > 2 ? ', …' : ''})`).join('; ')}` : ''}`);
  for (const v of results.violations) {
    const nodes = v.nodes.slice(0, 3).map((n) =>
      `      ${n.target.join(' ')}  ${n.html.replace(/\s+/g, ' ').slice(0, 160)}`).join('\n');
    const more = v.nodes.length > 3 ? `\n      … and ${v.nodes.length - 3} more` : '';
    const text = `accessibility: ${v.id} [${v.impact}] on ${where}: ${v.help} (${v.helpUrl})\n${nodes}${more}`;
    if (fatal.includes(v)) {
      bug(current.step, text);
    } else {
      a11yWarnings.push(text);
      log(`  WARNING ${text}`);
    }
  }
  return results;
}

/// What has the keyboard focus: a short description to compare and print,
/// whether it is on screen, and its focus ring: the outline's contrast with
/// what lies just outside it (WCAG 2.1 SC 1.4.11 asks for 3:1).
async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return { key: 'body', inMain: false, visible: false, ring: 0 };
    const r = el.getBoundingClientRect();
    const key = el.id ? `#${el.id}`
      : `${el.tagName.toLowerCase()}${el.className ? `.${String(el.className).split(' ').join('.')}` : ''}` +
        `${el.getAttribute('href') ? `[href="${el.getAttribute('href')}"]` : ''}` +
        `${el.tagName === 'BUTTON' ? `("${el.textContent.trim()}")` : ''}`;
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = (c) => {
      const [R, G, B] = rgb(c).slice(0, 3).map((v) => v / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
      return 0.2126 * R + 0.7152 * G + 0.0722 * B;
    };
    const cs = getComputedStyle(el);
    const width = cs.outlineStyle === 'none' ? 0 : parseFloat(cs.outlineWidth) || 0;
    let ring = 0;
    if (width > 0) {
      // The opaque background just outside the outline, left (or right) of the element.
      const out = (parseFloat(cs.outlineOffset) || 0) + width + 1;
      const x = r.left - out >= 0 ? r.left - out : r.right + out;
      const under = document.elementsFromPoint(x, r.top + r.height / 2).find((e) => e !== el && !el.contains(e));
      let bg = 'rgb(255, 255, 255)';
      for (let e = under; e; e = e.parentElement) {
        const c = getComputedStyle(e).backgroundColor;
        if ((rgb(c)[3] ?? 1) > 0) { bg = c; break; }
      }
      const [a, b] = [lum(cs.outlineColor), lum(bg)].sort((p, q) => q - p);
      ring = Math.round(((a + 0.05) / (b + 0.05)) * 100) / 100;
    }
    return {
      key,
      inMain: !!el.closest('main'),
      visible: r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 && r.right <= innerWidth,
      outline: width ? `${width}px ${cs.outlineColor}` : 'none',
      ring,
    };
  });
}

/// The focused element is on screen with a focus ring one can see.
function checkFocusShown(f) {
  check(f.visible, `${f.key} has the keyboard focus but is not visible`);
  check(f.ring >= 3, `${f.key}'s focus ring (outline ${f.outline}) has a contrast of ${f.ring}:1 with what surrounds it, below 3:1`);
}

// ---- the flow ----------------------------------------------------------------

const ids = {};
let exitCode = 0;
try {
  const alice = await person('alice');
  const bob = await person('bob');

  await step('signed out: / is the sign-in page', alice.page, async () => {
    await visit(alice.page, '/');
    await alice.page.locator('input[name=login_hint]').waitFor();
    await shot(alice.page, '01-sign-in');
    // A page that needs a session sends the browser to sign in first
    // (and back to the page afterwards).
    const resp = await alice.context.request.get(`${BASE}/request?q=orders`, { maxRedirects: 0 });
    const to = resp.headers()['location'] || '';
    check(resp.status() === 303 && to.startsWith('/auth/login') && /next=(%2F|\/)request/i.test(to),
      `/request without a session answered ${resp.status()} → ${to}`);
  });

  await step('accessibility: the sign-in page (signed out)', null, async () => {
    const out = await auditor(null);
    await audit(out, '/', 'sign-in page');
    await out.context.close();
  });

  await step('alice signs in with the form', alice.page, async () => {
    await visit(alice.page, '/');
    await alice.page.fill('input[name=login_hint]', 'alice');
    await alice.page.locator('form[action="/auth/login"]').getByRole('button', { name: 'Sign in' }).click();
    const signedIn = await until('the header to name alice', async () =>
      new URL(alice.page.url()).pathname === '/' && /alice/.test(await alice.page.locator('header').textContent()), 8000)
      .catch(() => false);
    if (!signedIn) {
      const blocked = problems.filter((m) => /form-action/.test(m));
      if (!blocked.length) throw new Error(`the sign-in form did not sign alice in (at ${alice.page.url()})`);
      problems.splice(0, problems.length, ...problems.filter((m) => !/form-action/.test(m)));
      bug('alice signs in with the form',
        'the sign-in form on / (GET /auth/login, which redirects to the identity provider) is blocked by the page\'s own ' +
        'Content-Security-Policy "form-action \'self\'" (Chromium applies form-action to the redirect target): ' + blocked[0]);
      log('  falling back to /auth/login?login_hint=alice');
      await signIn(alice, '/');
    }
    await showsLiterally(alice.page, 'alice', 'header');
    await shot(alice.page, '02-dashboard-empty');
  });

  await step('alice filters the eligible roles', alice.page, async () => {
    await visit(alice.page, '/request');
    await shot(alice.page, '03-request-list');
    await alice.page.fill('input[name=q]', 'orders');
    await Promise.all([alice.page.waitForURL(/q=orders/), alice.page.getByRole('button', { name: 'Filter' }).click()]);
    const links = await alice.page.locator('a.request-link').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    check(links.length > 0, 'no request links after filtering for "orders"');
    check(links.some((h) => h.includes('resource=orders') && h.includes('role=orders_reader')), `no link for orders/orders_reader: ${links}`);
    check(links.every((h) => /orders/.test(h)), `the filter kept rows without "orders": ${links}`);
  });

  await step('alice requests orders_reader on orders (hostile justification)', alice.page, async () => {
    const page = alice.page;
    await page.locator('a.request-link[href*="resource=orders&"][href*="role=orders_reader"]').first().click();
    await page.waitForURL(/\/request\/new\?/);
    await page.fill('#duration', '20s');
    await page.fill('#reason', J1);
    await page.fill('#ticket', 'INC-4711');
    await shot(page, '04-request-form');
    await Promise.all([page.waitForURL(/\/requests\/[^/?]+(\?.*)?$/), page.getByRole('button', { name: 'Submit request' }).click()]);
    ids.approved = await requestIdOf(page);
    check((await stateOf(page)) === 'pending', `new request is ${await stateOf(page)}, not pending`);
    const shown = (await page.locator('.justification').first().textContent()).trim();
    check(shown === J1, `.justification shows ${JSON.stringify(shown)}, not ${JSON.stringify(J1)}`);
    await noScriptRan(page);
    await shot(page, '05-request-pending');
  });

  // The accessibility audit's own contexts (see `auditor`), signed in
  // once the flow has data to show.
  let aliceA, bobA, formPath;
  await step('accessibility: request pages, with a pending request', null, async () => {
    aliceA = await auditor('alice', '/request');
    await audit(aliceA, '/request', '/request');
    formPath = await aliceA.page.locator('a.request-link[href*="resource=orders&"][href*="role=orders_reader"]').first().getAttribute('href');
    await audit(aliceA, formPath, '/request/new');
    await audit(aliceA, `/requests/${ids.approved}`, 'request (pending, as requester)');
  });

  await step('keyboard only: the request form (skip link, Tab order, Enter submits)', aliceA.page, async () => {
    const page = aliceA.page;
    const skip = 'a.skip[href="#main"]';
    const submit = 'button("Submit request")';
    // From the top of a freshly loaded page, Tab reaches the skip link
    // first; it shows when focused and leads to the form.
    await page.goto(BASE + formPath, { waitUntil: 'load' });
    await page.keyboard.press('Tab');
    let f = await focused(page);
    check(f.key === skip, `the first Tab focuses ${f.key}, not the skip link`);
    checkFocusShown(f);
    await page.keyboard.press('Enter');
    await until('the skip link to lead to #main', async () => new URL(page.url()).hash === '#main', 3000);
    await page.keyboard.press('Tab');
    f = await focused(page);
    check(f.inMain && f.key === '#duration', `after the skip link, Tab focuses ${f.key}, not the duration field`);

    // The whole Tab order from the top, typing as a keyboard user would; an
    // over-long duration, so the submission is refused (no request is made).
    await page.goto(BASE + formPath, { waitUntil: 'load' });
    const order = [];
    for (let i = 0; i < 60 && order[order.length - 1] !== submit; i += 1) {
      await page.keyboard.press('Tab');
      f = await focused(page);
      if (order[order.length - 1] === f.key) continue; // the parts of a date field
      order.push(f.key);
      checkFocusShown(f);
      if (f.key === '#duration') {
        await page.keyboard.press('ControlOrMeta+A');
        await page.keyboard.type('9h');
      }
      if (f.key === '#reason') await page.keyboard.type('Keyboard only: an over-long duration');
    }
    log(`  Tab order: ${order.join(' → ')}`);
    const at = (k) => order.indexOf(k);
    check(order[0] === skip, `the first Tab stop is ${order[0]}, not the skip link`);
    check(at('#duration') > 0 && at('#reason') > at('#duration') && at(submit) > at('#reason'),
      `Tab does not reach the duration, the justification and the submit button in that order: ${order.join(' → ')}`);
    const [resp] = await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    check(resp && resp.request().method() === 'POST' && resp.status() >= 400 && resp.status() < 500,
      `Enter on the submit button: ${resp && resp.request().method()} answered ${resp && resp.status()}, expected a refusal`);
    check(await page.locator('#duration[aria-invalid="true"]').count() === 1, 'the over-long duration is not marked invalid');
    await page.locator('#duration-error').waitFor();
    check((await page.inputValue('#reason')) === 'Keyboard only: an over-long duration', 'the justification typed was lost');
    log(`  refused (${resp.status()}): ${(await page.locator('#duration-error').textContent()).trim()}`);
    await audit(aliceA, null, '/request/new (validation error)');
  });

  await step('accessibility: approvals and the approver\'s view, with a pending request', null, async () => {
    bobA = await auditor('bob', '/approvals');
    await audit(bobA, '/approvals', '/approvals (a request pending)');
    await audit(bobA, `/requests/${ids.approved}`, 'request (pending, as approver)');
  });

  // Counted from before bob acts: alice's page polls every 3 s and may
  // reload itself while bob's step is still finishing.
  let loads = 0;
  check((await stateOf(alice.page)) === 'pending', 'alice\'s page is not showing her pending request');
  alice.page.on('load', () => { loads += 1; });
  // Loads seen once alice's page showed active: it must reload again by
  // itself to show the end (nothing else touches that page meanwhile).
  let loadsAtActive = 0;

  await step('bob sees it in /approvals, literally, and approves with a comment', bob.page, async () => {
    await signIn(bob, '/approvals');
    await openFromApprovals(bob.page, ids.approved, J1);
    await shot(bob.page, '07-request-approver-view');
    await visit(bob.page, '/approvals');
    await shot(bob.page, '06-approvals');
    await bob.page.locator(`a[href^="/requests/${ids.approved}"]`).first().click();
    await bob.page.waitForURL(new RegExp(`/requests/${ids.approved}(\\?.*)?$`));
    await decide(bob.page, 'Approve', 'OK for INC-4711 — bob');
    const s = await stateOf(bob.page);
    check(['approved', 'active'].includes(s), `after approval the request is ${s}`);
  });

  await step("alice's open page reloads itself and shows active with a ticking countdown", alice.page, async () => {
    const page = alice.page;
    await until('alice\'s page to show "active" by itself', async () => (await stateOf(page)) === 'active', 15000);
    check(loads > 0, 'the state changed without the page reloading?');
    loadsAtActive = loads;
    const c1 = (await page.locator('.countdown').first().textContent()).trim();
    check(/\d+s left/.test(c1), `countdown reads ${JSON.stringify(c1)}`);
    const c2 = await until('the countdown to tick', async () => {
      const t = (await page.locator('.countdown').first().textContent()).trim();
      return t !== c1 && t;
    }, 4000);
    log(`  countdown ${c1} → ${c2}`);
    const shown = (await page.locator('.justification').first().textContent()).trim();
    check(shown === J1, `.justification shows ${JSON.stringify(shown)} after reload`);
    await shot(page, '08-request-active');
  });

  await step('active access lists the grant (bob, approver scope)', bob.page, async () => {
    await visit(bob.page, '/active');
    await bob.page.locator(`a[href^="/requests/${ids.approved}"]`).first().waitFor();
    await showsLiterally(bob.page, 'alice');
    await shot(bob.page, '09-active-access');
  });

  await step('accessibility: active access and an active request', null, async () => {
    await audit(bobA, '/active', '/active (a grant active)');
    await audit(aliceA, `/requests/${ids.approved}`, 'request (active)');
  });

  const alice2 = await alice.newPage();
  await step('my requests lists it', alice2, async () => {
    await visit(alice2, '/requests');
    await alice2.locator(`a[href^="/requests/${ids.approved}"]`).first().waitFor();
    await shot(alice2, '10-my-requests');
  });

  await step('a second request, which bob rejects with a comment', alice2, async () => {
    ids.rejected = await requestAccess(alice2, { q: 'billing', resource: 'billing', role: 'orders_reader', duration: '10m', reason: J2 });
    const shown = (await alice2.locator('.justification').first().textContent()).trim();
    check(shown === J2, `.justification shows ${JSON.stringify(shown)}`);
    await openFromApprovals(bob.page, ids.rejected, J2);
    await decide(bob.page, 'Reject', 'Use the read replica instead — bob');
    check((await stateOf(bob.page)) === 'rejected', `after rejection: ${await stateOf(bob.page)}`);
    await alice2.reload();
    check((await stateOf(alice2)) === 'rejected', `alice sees ${await stateOf(alice2)}`);
    await showsLiterally(alice2, 'Use the read replica instead — bob');
    await noScriptRan(alice2);
    await shot(alice2, '11-request-rejected');
  });

  const bobNoJs = await person('bob', { javaScriptEnabled: false });
  await step('a third request, approved by bob with JavaScript disabled', bobNoJs.page, async () => {
    ids.deactivated = await requestAccess(alice2, { q: 'billing', resource: 'billing', role: 'orders_reader', duration: '10m', reason: J3 });
    await signIn(bobNoJs, '/approvals');
    await openFromApprovals(bobNoJs.page, ids.deactivated, J3);
    await decide(bobNoJs.page, 'Approve', 'Approved without JavaScript');
    await until('the no-JS approval to take effect', async () => {
      await bobNoJs.page.reload();
      return ['approved', 'active'].includes(await stateOf(bobNoJs.page));
    });
    // Without JavaScript the countdown is the server's text.
    await shot(bobNoJs.page, '12-request-approved-without-js');
  });

  await step('alice deactivates it early (confirmation dialog accepted)', alice2, async () => {
    await until('the third request to be active', async () => {
      await alice2.reload();
      return (await stateOf(alice2)) === 'active';
    });
    const before = alice.confirms;
    await Promise.all([alice2.waitForNavigation(), alice2.getByRole('button', { name: 'Deactivate now' }).click()]);
    check(alice.confirms === before + 1, 'no confirmation dialog before deactivating');
    const s = await until('deactivation', async () => {
      const s = await stateOf(alice2);
      if (['ending', 'ended', 'revoked'].includes(s)) return s;
      await alice2.reload();
      return null;
    });
    log(`  after deactivation: ${s}`);
  });

  await step("the first grant ends at its deadline; alice's page follows", alice.page, async () => {
    const page = alice.page;
    await until('the first request to show "ended"', async () => (await stateOf(page)) === 'ended', 45000, 500);
    check(loads > loadsAtActive, 'the page did not reload by itself');
    const shown = (await page.locator('.justification').first().textContent()).trim();
    check(shown === J1, '.justification changed');
    await noScriptRan(page);
    await shot(page, '14-request-ended');
  });

  await step('a fourth request: a stale CSRF token is refused, then alice cancels', alice2, async () => {
    ids.cancelled = await requestAccess(alice2, { q: 'orders', resource: 'orders', role: 'orders_reader', duration: '5m', reason: J4 });
    const cancel = alice2.getByRole('button', { name: 'Cancel request' });
    await cancel.waitFor();
    // The form with a token that is not the session's: a 403 page.
    await cancel.evaluate((b) => { b.form.querySelector('input[name=csrf]').value = 'stale-token'; });
    const [resp] = await Promise.all([alice2.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(BASE)), cancel.click()]);
    check(resp.status() === 403, `a stale CSRF token answered ${resp.status()}`);
    await alice2.waitForLoadState('load');
    await showsLiterally(alice2, 'Refused');
    await shot(alice2, '13-csrf-refused');
    await visit(alice2, `/requests/${ids.cancelled}`);
    check((await stateOf(alice2)) === 'pending', 'the refused form changed the request');
    await Promise.all([alice2.waitForNavigation(), alice2.getByRole('button', { name: 'Cancel request' }).click()]);
    check((await stateOf(alice2)) === 'cancelled', `after cancelling: ${await stateOf(alice2)}`);
  });

  await step('alice is refused the audit pages', alice2, async () => {
    for (const path of ['/audit', '/admin', '/insights']) {
      const resp = await alice2.goto(BASE + path);
      check(resp.status() === 403 || resp.status() === 404, `${path} answered ${resp.status()} to alice`);
    }
    await visit(alice2, '/requests');
    await shot(alice2, '15-my-requests-ended');
    await visit(alice2, '/');
    await shot(alice2, '16-dashboard');
  });

  await step('accessibility: the dashboard, my requests, ended and rejected requests', null, async () => {
    await audit(aliceA, '/', 'dashboard');
    await audit(aliceA, '/requests', '/requests');
    await audit(aliceA, `/requests/${ids.approved}`, 'request (ended)');
    await audit(aliceA, `/requests/${ids.rejected}`, 'request (rejected)');
  });

  await step('alice signs out', alice2, async () => {
    await Promise.all([alice2.waitForURL(`${BASE}/`), alice2.locator('header').getByRole('button', { name: 'Sign out' }).click()]);
    await alice2.locator('input[name=login_hint]').waitFor();
    const resp = await alice.context.request.get(`${BASE}/requests`, { maxRedirects: 0 });
    check(resp.status() === 303 && (resp.headers()['location'] || '').startsWith('/auth/login'),
      `after signing out /requests answered ${resp.status()}`);
    // alice's first page is still open on her request and polls every 3 s:
    // signed out, it must neither reload into the provider nor break.
    await alice.page.waitForTimeout(3500);
  });

  const dave = await person('dave');
  await step('dave (auditor) reads the audit log: literal justification, verified chain', dave.page, async () => {
    await signIn(dave, '/audit');
    await showsLiterally(dave.page, J1);
    await showsLiterally(dave.page, J2);
    const text = (await dave.page.locator('main').textContent()).replace(/\s+/g, ' ');
    check(/verified|intact/i.test(text), `the audit page does not say the chain is verified: ${text.slice(0, 400)}`);
    check(!/broken|tampered|mismatch/i.test(text), 'the audit page reports a broken chain');
    await shot(dave.page, '17-audit');
  });

  await step("a request's timeline", dave.page, async () => {
    await visit(dave.page, `/audit/requests/${ids.approved}`);
    await showsLiterally(dave.page, J1);
    const text = (await dave.page.locator('main').textContent()).replace(/\s+/g, ' ');
    for (const w of ['alice', 'bob', 'OK for INC-4711']) check(text.includes(w), `timeline lacks ${w}`);
    await shot(dave.page, '18-audit-timeline');
  });

  await step('the CSV export holds the justification literally', dave.page, async () => {
    let csv;
    const link = dave.page.locator('a[href*="/audit/export.csv"]').first();
    await visit(dave.page, '/audit');
    if (await link.count()) {
      const [download] = await Promise.all([dave.page.waitForEvent('download'), link.click()]);
      const chunks = [];
      for await (const c of await download.createReadStream()) chunks.push(c);
      csv = Buffer.concat(chunks).toString('utf8');
      log(`  downloaded ${download.suggestedFilename()} (${csv.length} bytes)`);
    } else {
      log('  no export link on /audit; fetching /audit/export.csv');
      const resp = await dave.page.request.get(`${BASE}/audit/export.csv`);
      check(resp.status() === 200, `/audit/export.csv answered ${resp.status()}`);
      csv = await resp.text();
    }
    check(csv.includes(J1), 'the CSV lacks the justification, literally');
    check(csv.includes(J2.replace(/"/g, '""')), 'the CSV lacks the second justification (quotes doubled)');
    check(csv.includes(ids.approved), 'the CSV lacks the request id');
    const refused = await alice2.request.get(`${BASE}/audit/export.csv`);
    check([403, 404].includes(refused.status()), `alice got the CSV: ${refused.status()}`);
  });

  await step('insights and administration', dave.page, async () => {
    await visit(dave.page, '/insights');
    await shot(dave.page, '19-insights');
    await visit(dave.page, '/admin');
    await showsLiterally(dave.page, 'demo');
    await shot(dave.page, '20-admin');
  });

  await step('accessibility: audit, insights and administration', null, async () => {
    const daveA = await auditor('dave', '/audit');
    await audit(daveA, '/audit', '/audit');
    await audit(daveA, `/audit/requests/${ids.approved}`, '/audit/requests/{id}');
    await audit(daveA, '/insights', '/insights');
    await audit(daveA, '/admin', '/admin');
    const q = new URL(BASE + formPath).searchParams;
    await audit(daveA, `/admin/who?target=${encodeURIComponent(q.get('target'))}&resource=${encodeURIComponent(q.get('resource'))}` +
      `&role=${encodeURIComponent(q.get('role'))}`, '/admin/who');
    await audit(daveA, '/admin/user?name=alice', '/admin/user');
  });

  await step('every page was checked for its Content-Security-Policy', null, async () => {
    const expected = ['/', '/request', '/request/new', '/requests', '/requests/{id}', '/approvals', '/active',
      '/audit', '/audit/requests/{id}', '/insights', '/admin'];
    const missing = expected.filter((p) => !pagesChecked.has(p));
    check(missing.length === 0, `pages never loaded as documents: ${missing}`);
  });
} catch (e) {
  exitCode = 1;
  console.error(`\nFAILED at step: ${current.step}`);
  console.error(e && e.stack ? e.stack : String(e));
  if (problems.length) console.error(`problems seen:\n  ${problems.join('\n  ')}`);
  const safe = current.step.replace(/[^\w]+/g, '-').slice(0, 60);
  writeFileSync(join(SHOTS, `FAILED-${safe}.txt`), `${current.step}\n${e && e.stack ? e.stack : e}\n${problems.join('\n')}\n`);
  const page = current.page;
  if (page && !page.isClosed()) {
    console.error(`page URL: ${page.url()}`);
    await page.screenshot({ path: join(SHOTS, `FAILED-${safe}.png`), fullPage: true }).catch(() => {});
    const text = await page.locator('body').textContent().catch(() => '');
    console.error(`page text: ${(text || '').replace(/\s+/g, ' ').trim().slice(0, 1500)}`);
    console.error(`screenshot: ${join(SHOTS, `FAILED-${safe}.png`)}`);
  }
}
if (bugs.length) {
  exitCode = 1;
  console.error(`\n${bugs.length} bug(s) found on the way (the flow went on around them):`);
  for (const b of bugs) console.error(`- at step "${b.step}": ${b.bug}`);
}
for (const c of contexts) await c.close().catch(() => {});
await browser.close().catch(() => {});

const total = Date.now() - started;
log(`pages checked for CSP: ${[...pagesChecked].sort().join(' ')}`);
log(`accessibility (axe-core, ${AXE_TAGS.join(' ')}): ${a11yAudited.length} pages audited, ` +
  `${a11yWarnings.length} moderate or minor violation(s) (warnings above)`);
log(`${exitCode === 0 ? 'all steps passed' : 'FAILED'} in ${(total / 1000).toFixed(1)} s`);
console.log(`E2E-RESULT ${JSON.stringify({ ok: exitCode === 0, ids, bugs, timings, a11y_audited: a11yAudited, total_ms: total })}`);
process.exit(exitCode);
