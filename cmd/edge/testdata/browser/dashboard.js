// Opens edge's admin dashboard in headless Chromium and watches its numbers
// move: it prints {"ready":true,...} once the page is live, then waits
// until the request total and the hub subscriber count have grown (the Go
// test makes traffic after "ready"), and saves a screenshot.
// Usage: node dashboard.js URL WORKDIR SCREENSHOT [KEY]   (prints JSON lines)
// With KEY the page first must show the key prompt and no numbers; the
// key is then given through the URL fragment.
const { chromium } = require('playwright-core');
const path = require('path');

(async () => {
  const [url, work, shot, key] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const result = {};
  const text = (page, id) => page.textContent('#' + id);
  try {
    const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    let resp = await page.goto(url);
    result.firstStatus = resp.status();
    if (key) {
      await page.waitForFunction(() => document.getElementById('status').textContent === 'admin key required', null, { timeout: 10000 });
      result.lockedTotal = await text(page, 'total-requests');
      result.lockedSites = await page.$$eval('#sites tbody tr', (rows) => rows.length);
      resp = await page.goto(url + '#key=' + encodeURIComponent(key));
      result.keyedURL = page.url();
    }
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, { timeout: 10000 });
    result.url = page.url();
    result.total0 = Number(await text(page, 'total-requests'));
    result.subs0 = Number(await text(page, 'hub-subscribers'));
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    await page.waitForFunction(([t, s]) =>
      Number(document.getElementById('total-requests').textContent) > t &&
      Number(document.getElementById('hub-subscribers').textContent) > s &&
      parseFloat(document.getElementById('rps').textContent) > 0,
    [result.total0, result.subs0], { timeout: 20000 });
    result.total1 = Number(await text(page, 'total-requests'));
    result.subs1 = Number(await text(page, 'hub-subscribers'));
    result.rps = await text(page, 'rps');
    result.latency = await text(page, 'latency');
    // Let a few more updates draw the sparklines before the picture.
    await page.waitForTimeout(4000);
    result.upstreams = await page.$$eval('#upstreams tbody tr', (rows) => rows.map((r) => r.textContent));
    result.certs = await page.$$eval('#certs tbody tr', (rows) => rows.map((r) => r.textContent));
    result.reloads = await page.$$eval('#reloads tbody tr', (rows) => rows.map((r) => r.textContent));
    result.channels = await page.$$eval('#channels tbody tr', (rows) => rows.map((r) => r.textContent));
    await page.screenshot({ path: shot, fullPage: true });
    result.errors = errors;
  } catch (e) {
    result.error = String(e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})();
