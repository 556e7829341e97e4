// Opens URL in headless Chromium whose HOME is the given directory, with no
// certificate flag and no certificate of its own: whether the page loads
// depends only on the NSS database under HOME/.pki/nssdb (what `edge trust`
// changes). Usage: node trusted.js URL HOME WORKDIR   (prints one JSON line:
// {status, security} when the page loaded, {error} when it did not)
const { chromium } = require('playwright-core');
const path = require('path');

(async () => {
  const [url, home, work] = process.argv.slice(2);
  const result = {};
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(path.join(work, 'profile'), {
      executablePath: '/usr/bin/chromium', headless: true,
      env: { ...process.env, HOME: home },
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    cdp.on('Security.visibleSecurityStateChanged', (e) => { result.security = e.visibleSecurityState.securityState; });
    await cdp.send('Security.enable');
    const resp = await page.goto(url, { timeout: 15000 });
    result.status = resp.status();
    result.body = (await page.textContent('body')).trim();
  } catch (e) {
    result.error = String(e);
  } finally {
    if (ctx) await ctx.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})();
