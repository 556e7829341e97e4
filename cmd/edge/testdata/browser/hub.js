// Drives hub/client.js in headless Chromium over wss against a running
// edge (cmd/edge TestBrowserHub): SSE fallback when WebSockets cannot
// open, recovery over SSE, token refresh past the first token's exp, and
// a disconnect with reconnect:false that stops the client.
// Usage: node hub.js BASE_URL CA_PEM WORKDIR ADMIN_URL SECRET
// Prints one JSON line: {sse: {...}, refresh: {...}, stop: {...}} or {error}.
const { trustCA, launch } = require('./chromium');

const [base, caPem, work, admin, secret] = process.argv.slice(2);

async function post(p, body) {
  const res = await fetch(admin + p, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body) });
  if (res.status !== 202) throw new Error(`${p}: ${res.status} ${await res.text()}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// newHub creates an EdgeHub in the page as window[name], logging its
// events into window[name + 'Log'].
async function newHub(page, name, url, opts) {
  await page.evaluate(({ name, url, opts, secret }) => {
    const log = [];
    window[name + 'Log'] = log;
    const o = { minDelay: 100, maxDelay: 400, ...opts };
    if (o.jwtSeconds) {
      // token() signs a fresh HS256 JWT with WebCrypto, as an app's
      // token endpoint would hand one out.
      const seconds = o.jwtSeconds;
      const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
      const enc = (v) => b64(new TextEncoder().encode(JSON.stringify(v)));
      o.token = async () => {
        window[name + 'Tokens'] = (window[name + 'Tokens'] || 0) + 1;
        const head = enc({ alg: 'HS256', typ: 'JWT' }) + '.' + enc({ sub: 'page', exp: Math.floor(Date.now() / 1000) + seconds });
        const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
        return head + '.' + b64(await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(head)));
      };
      delete o.jwtSeconds;
    }
    const hub = new EdgeHub(url, o);
    for (const type of ['open', 'close', 'message', 'gap', 'refreshed', 'disconnect', 'error']) {
      hub.on(type, (ev) => log.push({ type, transport: ev && ev.transport, code: ev && ev.code, data: ev && ev.data, t: Date.now() }));
    }
    window[name] = hub;
  }, { name, url, opts, secret });
}

async function until(page, fn, arg, what, timeout = 15000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 20 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

const logOf = (page, name) => page.evaluate((n) => window[n + 'Log'], name);

(async () => {
  const ctx = await launch(work, trustCA(work, caPem));
  const result = {};
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    await page.goto(base + '/hub.html');
    await until(page, () => typeof window.EdgeHub === 'function', null, 'client.js loaded');

    // 1. WebSockets blocked at the network level for /socket/: the
    // client falls back to SSE, receives, and recovers after a drop.
    let blockWS = true;
    await page.routeWebSocket(/\/socket\//, (ws) => {
      if (blockWS) ws.close({ code: 1011, reason: 'blocked by the test' });
      else ws.connectToServer();
    });
    await newHub(page, 'sse', base.replace(/^http/, 'ws') + '/socket/', { channels: ['orders'], sseAfter: 2, minDelay: 1000, maxDelay: 1000 });
    await until(page, () => sseLog.some((e) => e.type === 'open'), null, 'SSE open');
    await post('/publish/orders', { n: 1 });
    await until(page, () => sseLog.filter((e) => e.type === 'message').length === 1, null, 'message 1 over SSE');
    await post('/hub/disconnect', { channel: 'orders', reason: 'drop for the test' });
    await until(page, () => sseLog.filter((e) => e.type === 'close').length >= 1 && window.sse.state !== 'open', null, 'drop seen');
    await post('/publish/orders', { n: 2 }); // while the client is away
    await post('/publish/orders', { n: 3 });
    await until(page, () => sseLog.filter((e) => e.type === 'message').length === 3, null, 'messages 2 and 3 recovered');
    const sl = await logOf(page, 'sse');
    result.sse = {
      transports: sl.filter((e) => e.type === 'open').map((e) => e.transport),
      messages: sl.filter((e) => e.type === 'message').map((e) => e.data.n),
      gaps: sl.filter((e) => e.type === 'gap').length,
    };
    await page.evaluate(() => window.sse.close());

    // 1b. On SSE, the client tries WebSocket again after wsRetry, and
    // stays on it once it opens.
    await newHub(page, 'back', base.replace(/^http/, 'ws') + '/socket/', { channels: ['orders'], sseAfter: 1, wsRetry: 1500 });
    await until(page, () => backLog.some((e) => e.type === 'open' && e.transport === 'sse'), null, 'SSE open before the retry');
    blockWS = false; // upgrades pass again
    await until(page, () => backLog.some((e) => e.type === 'open' && e.transport === 'websocket'), null, 'back on WebSocket');
    await post('/publish/orders', { n: 'on ws' });
    await until(page, () => backLog.some((e) => e.type === 'message' && e.data.n === 'on ws'), null, 'message on WebSocket');
    // The route compresses (permessage-deflate): a 3 KB message arrives
    // whole in Chromium, which negotiated it.
    await post('/publish/orders', { n: 'big', pad: 'x'.repeat(3000) });
    await until(page, () => backLog.some((e) => e.type === 'message' && e.data.n === 'big' && e.data.pad.length === 3000), null, 'compressed message');
    result.back = (await logOf(page, 'back')).filter((e) => e.type === 'open').map((e) => e.transport);
    await page.evaluate(() => window.back.close());

    // 2. A token refreshed in place keeps the page connected (over wss)
    // past the first token's exp.
    await newHub(page, 'jwt', base.replace(/^http/, 'ws') + '/jwt/', { channels: ['orders'], jwtSeconds: 3, refreshMargin: 2000 });
    await until(page, () => jwtLog.some((e) => e.type === 'open'), null, 'jwt hub open');
    const opened = Date.now();
    await sleep(4500 - (Date.now() - opened)); // past the first token's exp (3 s)
    await post('/publish/orders', { n: 'after exp' });
    await until(page, () => jwtLog.some((e) => e.type === 'message' && e.data.n === 'after exp'), null, 'message after exp');
    const jl = await logOf(page, 'jwt');
    result.refresh = {
      transports: jl.filter((e) => e.type === 'open').map((e) => e.transport),
      closes: jl.filter((e) => e.type === 'close').map((e) => e.code),
      refreshed: jl.filter((e) => e.type === 'refreshed').length,
      tokens: await page.evaluate(() => window.jwtTokens),
    };

    // 3. A disconnect with reconnect:false stops the client for good.
    await post('/hub/disconnect', { sub: 'page', code: 4403, reason: 'banned', reconnect: false });
    await until(page, () => window.jwt.state === 'closed', null, 'client stopped');
    await sleep(1000); // several backoff periods
    const stopLog = await logOf(page, 'jwt');
    result.stop = {
      state: await page.evaluate(() => window.jwt.state),
      opens: stopLog.filter((e) => e.type === 'open').length,
      lastClose: stopLog.filter((e) => e.type === 'close').map((e) => e.code).pop(),
    };
  } catch (e) {
    result.error = String(e);
  } finally {
    await ctx.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})();
