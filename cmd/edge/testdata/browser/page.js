// Loads edge's demo page in headless Chromium that trusts edge's local CA
// through an NSS database in a private HOME, then waits for the page's hub
// WebSocket to open and for a published message to appear.
// Usage: node page.js URL CA_PEM WORKDIR   (prints one JSON line)
const { trustCA, launch } = require('./chromium');
const path = require('path');

(async () => {
  const [url, caPem, work] = process.argv.slice(2);
  const ctx = await launch(work, trustCA(work, caPem));
  const result = { security: 'unknown', wsErrors: [] };
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    cdp.on('Security.visibleSecurityStateChanged', (e) => { result.security = e.visibleSecurityState.securityState; });
    await cdp.send('Security.enable');
    page.on('websocket', (ws) => ws.on('socketerror', (e) => result.wsErrors.push(String(e))));
    const resp = await page.goto(url);
    result.status = resp.status();
    result.protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, { timeout: 15000 });
    result.live = true;
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    // The Go test publishes once it reads "ready"; wait for the row.
    await page.waitForFunction(() => document.querySelector('#countries tbody tr'), null, { timeout: 15000 });
    result.row = await page.textContent('#countries tbody tr');
    await page.screenshot({ path: path.join(work, 'page.png') });
  } catch (e) {
    result.error = String(e);
  } finally {
    await ctx.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})();
