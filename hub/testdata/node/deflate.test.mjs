// permessage-deflate with Node's ws (RFC 7692). Run by TestDeflateNodeWS
// (go test ./hub/), which starts a hub with a route /z/ (compression: true,
// allow_publish: true) and sets EDGE_HTTP.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

const HTTP = process.env.EDGE_HTTP;
assert.ok(HTTP, "EDGE_HTTP not set: run through go test ./hub/ -run TestDeflateNodeWS");
const WS = HTTP.replace(/^http/, "ws");

// open connects and collects the JSON messages it receives.
function open(url, perMessageDeflate) {
  const ws = new WebSocket(url, { perMessageDeflate });
  ws.received = [];
  ws.on("message", (data) => ws.received.push(JSON.parse(data.toString())));
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

async function until(cond, what, ms = 5000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("compressed fan-out to ws with and without perMessageDeflate", async () => {
  const zsub = await open(`${WS}/z/?channel=zc`, true);
  const psub = await open(`${WS}/z/?channel=zc`, false);
  const pub = await open(`${WS}/z/`, true);
  try {
    assert.match(zsub.extensions, /^permessage-deflate/);
    assert.equal(psub.extensions, "");
    for (const ws of [zsub, psub]) {
      await until(() => ws.received.some((m) => m.type === "subscribed"), "subscribed");
    }
    await until(() => pub.received.some((m) => m.type === "welcome"), "welcome");

    const rows = [];
    for (let i = 0; rows.length < 60; i++) rows.push({ id: i, name: `user-${i}`, status: "online" });
    const data = { rows };
    assert.ok(JSON.stringify(data).length > 2000);
    const zBefore = zsub._socket.bytesRead;
    const pBefore = psub._socket.bytesRead;
    const pubBefore = pub._socket.bytesWritten;
    // ws compresses it (over its 1 KiB threshold): the hub inflates it.
    pub.send(JSON.stringify({ type: "publish", channel: "zc", id: 1, data }));
    await until(() => pub.received.some((m) => m.type === "published"), "published");
    assert.ok(pub._socket.bytesWritten - pubBefore < 1000, `publish sent ${pub._socket.bytesWritten - pubBefore} bytes: not compressed`);

    for (const ws of [zsub, psub]) {
      await until(() => ws.received.some((m) => m.channel === "zc" && !m.type), "the message");
      assert.deepEqual(ws.received.find((m) => m.channel === "zc" && !m.type).data, data);
    }
    const zBytes = zsub._socket.bytesRead - zBefore;
    const pBytes = psub._socket.bytesRead - pBefore;
    assert.ok(zBytes < 1000, `compressed subscriber read ${zBytes} bytes`);
    assert.ok(pBytes > 2000, `plain subscriber read ${pBytes} bytes`);
  } finally {
    for (const ws of [zsub, psub, pub]) ws.close();
  }
});
