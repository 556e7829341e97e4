// The one way the browser tests start Debian's headless Chromium: a
// private HOME whose NSS database trusts edge's local CA (not
// --ignore-certificate-errors), and a profile under WORKDIR.
const { chromium } = require('playwright-core');
const cp = require('child_process');
const fs = require('fs');
const path = require('path');

// trustCA creates HOME/.pki/nssdb holding caPem as a trusted root and
// returns HOME.
function trustCA(work, caPem) {
  const home = path.join(work, 'home');
  const db = path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true });
  cp.execFileSync('certutil', ['-N', '-d', 'sql:' + db, '--empty-password']);
  cp.execFileSync('certutil', ['-A', '-d', 'sql:' + db, '-n', 'edge-test-ca', '-t', 'C,,', '-i', caPem]);
  return home;
}

// launch starts Chromium with HOME home (its NSS database decides what it
// trusts) and extra launch options (viewport…).
function launch(work, home, extra = {}) {
  return chromium.launchPersistentContext(path.join(work, 'profile'), {
    executablePath: '/usr/bin/chromium', headless: true,
    env: { ...process.env, HOME: home },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ...extra,
  });
}

module.exports = { trustCA, launch };
