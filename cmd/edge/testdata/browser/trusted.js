// Opens URL in headless Chromium whose HOME is the given directory, with no
// certificate flag and no certificate of its own: whether the page loads
// depends only on the NSS database under HOME/.pki/nssdb (what `edge trust`
// changes). Usage: node trusted.js URL HOME WORKDIR   (prints one JSON line:
// {status, security} when the page loaded, {error} when it did not)
const { launch } = require('./chromium');

(async () => {
  const [url, home, work] = process.argv.slice(2);
  const result = {};
  let ctx;
  try {
    ctx = await launch(work, home);
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
