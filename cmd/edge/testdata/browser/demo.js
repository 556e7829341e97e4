// Drives the big-screen demo (examples/dashboard) in headless Chromium that
// trusts edge's local CA through an NSS database in a private HOME. The Go
// test sends one JSON command per line on stdin and gets one JSON line back:
//   {"wait": "JS expression", "timeout": ms}  -> the page's state once it is true
//   {"shot": "/path.png"}                     -> {"shot": true}
//   {"quit": true}
// Usage: node demo.js URL CA_PEM WORKDIR
const { trustCA, launch } = require('./chromium');
const path = require('path');
const readline = require('readline');

(async () => {
  const [url, caPem, work] = process.argv.slice(2);
  const ctx = await launch(work, trustCA(work, caPem), { viewport: { width: 1920, height: 1080 } });
  const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  const errors = [];
  let page;
  const state = () => page.evaluate(() => ({
    orders: Number(document.getElementById('orders').textContent.replace(/,/g, '')),
    views: Number(document.getElementById('views').textContent.replace(/,/g, '')),
    shops: document.getElementById('shops').textContent,
    countries: document.querySelectorAll('#countries li').length,
    products: document.querySelectorAll('#products li').length,
    status: document.getElementById('status').textContent,
    opens: Number(document.body.dataset.opens),
    gaps: Number(document.body.dataset.gaps),
    closes: Number(document.body.dataset.closes || 0),
    transport: document.body.dataset.transport || '',
  }));
  try {
    page = ctx.pages()[0] || await ctx.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
    const resp = await page.goto(url);
    out({ status: resp.status() });
  } catch (e) {
    out({ error: String(e) });
    await ctx.close();
    return;
  }
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const c = JSON.parse(line);
    try {
      if (c.quit) break;
      if (c.shot) {
        await page.screenshot({ path: c.shot });
        out({ shot: true });
        continue;
      }
      await page.waitForFunction(c.wait, null, { timeout: c.timeout || 15000 });
      out({ state: await state(), errors });
    } catch (e) {
      let s = null;
      try { s = await state(); } catch (e2) { /* page gone */ }
      out({ error: String(e), state: s, errors });
    }
  }
  await ctx.close();
})();
