// Tests of hub/client.js under Node with the ws package. Run by TestClientJS
// (go test ./hub/), which starts a real hub and sets EDGE_HTTP and EDGE_TOKEN.
import { test as nodeTest, before, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import WebSocket, { WebSocketServer } from "ws";

const HTTP = process.env.EDGE_HTTP;
const TOKEN = process.env.EDGE_TOKEN;
assert.ok(HTTP, "EDGE_HTTP not set: run these tests through go test ./hub/ -run TestClientJS");
const WS = HTTP.replace(/^http/, "ws");

// Any access to DOM globals fails the test: the client must not touch them.
for (const name of ["document", "window", "localStorage"]) {
  Object.defineProperty(globalThis, name, {
    configurable: true,
    get() {
      throw new Error(`client.js touched the DOM global ${name}`);
    },
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, ms = 5000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
    await sleep(5);
  }
}

// fetchClient downloads a script from the hub into a fresh directory (with
// an optional package.json) and imports it.
async function fetchClient(name, pkg) {
  const res = await fetch(`${HTTP}/socket/${name}`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/javascript/);
  const dir = mkdtempSync(join(tmpdir(), "edge-client-"));
  if (pkg) writeFileSync(join(dir, "package.json"), JSON.stringify(pkg));
  const file = join(dir, name);
  writeFileSync(file, await res.text());
  return import(pathToFileURL(file).href);
}

let EdgeHub;
before(async () => {
  // As a classic script (CommonJS here): defines globalThis.EdgeHub.
  await fetchClient("client.js");
  assert.equal(typeof globalThis.EdgeHub, "function");
  delete globalThis.EdgeHub;
  // As an ES module by side effect.
  await fetchClient("client.js", { type: "module" });
  assert.equal(typeof globalThis.EdgeHub, "function");
  delete globalThis.EdgeHub;
  // As an ES module with exports.
  const mod = await fetchClient("client.mjs");
  assert.equal(typeof mod.EdgeHub, "function");
  assert.equal(mod.default, mod.EdgeHub);
  EdgeHub = mod.EdgeHub;
});

// record collects a hub's events.
function record(hub) {
  const log = [];
  for (const type of ["open", "close", "message", "gap", "error", "subscribed", "published", "reconnecting"]) {
    hub.on(type, (ev) => log.push({ type, ev }));
  }
  log.of = (type) => log.filter((x) => x.type === type).map((x) => x.ev);
  log.data = (channel) =>
    log
      .of("message")
      .filter((m) => m.channel === channel)
      .map((m) => m.data);
  return log;
}

async function publish(channel, data) {
  const res = await fetch(`${HTTP}/publish/${channel}`, { method: "POST", body: JSON.stringify(data) });
  assert.equal(res.status, 202);
  await res.arrayBuffer();
}

// drop cuts every connection of a hub route (no close frame), then
// publishes payloads while the clients are away.
async function drop(route, channel, payloads) {
  const q = new URLSearchParams({ route, channel, publish: payloads.join(",") });
  const res = await fetch(`${HTTP}/ctl/drop?${q}`, { method: "POST" });
  assert.equal(res.status, 204);
}

const fast = { WebSocket, minDelay: 40, maxDelay: 200 };

// Every hub and server a test makes is closed after it, pass or fail, so
// that a failure cannot keep the process alive with reconnect timers.
const cleanups = [];
afterEach(() => {
  for (const f of cleanups.splice(0)) f();
});
function newHub(url, opts) {
  const hub = new EdgeHub(url, opts);
  cleanups.push(() => hub.close());
  return hub;
}
const test = (name, fn) => nodeTest(name, { timeout: 15000 }, fn);

test("sends made before open are queued and delivered in order", async () => {
  const hub = newHub(`${WS}/socket/`, { ...fast, channels: ["js-q"] });
  const log = record(hub);
  assert.equal(hub.state, "connecting");
  hub.publish("js-q", { n: 1 }); // no "Still in CONNECTING state"
  hub.publish("js-q", { n: 2 });
  hub.publish("js-q", { n: 3 }, "req-3");
  await until(() => log.data("js-q").length === 3, "3 messages");
  assert.deepEqual(log.data("js-q").map((d) => d.n), [1, 2, 3]);
  await until(() => log.of("published").length === 1, "published reply for the request with an id");
  assert.equal(log.of("published")[0].id, "req-3");
  assert.equal(hub.state, "open");
  assert.deepEqual(log.of("error"), []);
  hub.close();
  assert.equal(hub.state, "closed");
});

test("reconnects after a drop and resubscribes with since: nothing lost, nothing twice", async () => {
  const hub = newHub(`${WS}/socket/`, { ...fast, channels: ["js-r"] });
  const log = record(hub);
  await until(() => log.of("subscribed").length === 1, "subscribed");
  await publish("js-r", 1);
  await until(() => log.data("js-r").length === 1, "message 1");
  const before = hub.position("js-r");

  await drop("/socket/", "js-r", [2, 3]); // published while the client is away
  await until(() => log.of("open").length === 2, "reconnected");
  assert.ok(log.of("close").length >= 1, "a close event was reported");
  await until(() => log.data("js-r").length === 3, "replayed 2 and 3");
  await publish("js-r", 4);
  await until(() => log.data("js-r").length === 4, "live message 4");
  assert.deepEqual(log.data("js-r"), [1, 2, 3, 4]);
  assert.deepEqual(log.of("gap"), []);
  assert.ok(hub.position("js-r").seq > before.seq);
  hub.close();
});

test("reports a gap when the history no longer reaches back", async () => {
  const hub = newHub(`${WS}/small/`, { ...fast, channels: ["js-g"] }); // history size 3
  const log = record(hub);
  await until(() => log.of("subscribed").length === 1, "subscribed");
  await drop("/small/", "js-g", [1, 2, 3, 4, 5, 6, 7, 8]);
  await until(() => log.of("gap").length === 1, "gap");
  const gap = log.of("gap")[0];
  assert.equal(gap.channel, "js-g");
  assert.equal(gap.reason, "history");
  assert.equal(hub.position("js-g").seq, gap.seq);
  await publish("js-g", 9);
  await until(() => log.data("js-g").includes(9), "live message after the gap");
  hub.close();
});

test("subscribe and unsubscribe while connecting and while open", async () => {
  const hub = newHub(`${WS}/socket/`, { ...fast });
  const log = record(hub);
  hub.subscribe("js-s1");
  hub.subscribe("js-s2");
  hub.unsubscribe("js-s2");
  await until(() => hub.state === "open" && log.of("subscribed").length === 1, "subscribed to js-s1");
  hub.subscribe("js-s3");
  await until(() => log.of("subscribed").length === 2, "subscribed to js-s3");
  hub.unsubscribe("js-s1");
  await sleep(50);
  await publish("js-s1", "nope");
  await publish("js-s2", "nope");
  await publish("js-s3", "yes");
  await until(() => log.of("message").length >= 1, "message");
  await sleep(50);
  assert.deepEqual(
    log.of("message").map((m) => [m.channel, m.data]),
    [["js-s3", "yes"]]
  );
  hub.close();
});

test("token in the subprotocol, in the query, or from an async function", async () => {
  for (const opts of [{ token: TOKEN }, { token: TOKEN, tokenIn: "query" }, { token: async () => TOKEN }]) {
    const hub = newHub(`${WS}/jwt/`, { ...fast, ...opts });
    const log = record(hub);
    await until(() => log.of("open").length === 1, `open with ${JSON.stringify(Object.keys(opts))}`);
    hub.close();
  }
  // Without a token the upgrade is refused (401): close events, retries.
  const hub = newHub(`${WS}/jwt/`, { ...fast });
  const log = record(hub);
  await until(() => log.of("close").length >= 2, "two refused attempts");
  assert.equal(log.of("open").length, 0);
  hub.close();
});

test("heartbeat: a silent server is detected and the client reconnects", async () => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  cleanups.push(() => wss.close());
  await new Promise((r) => wss.once("listening", r));
  let conns = 0;
  let pings = 0;
  wss.on("connection", (ws) => {
    conns++;
    ws.send(JSON.stringify({ type: "welcome", epoch: "e", protocol: 1 }));
    ws.on("message", (d) => {
      if (JSON.parse(String(d)).type === "ping") pings++; // never answered
    });
  });
  const url = `ws://127.0.0.1:${wss.address().port}/`;
  const hub = newHub(url, { ...fast, pingInterval: 100, pongTimeout: 100 });
  const log = record(hub);
  await until(() => conns === 2, "a second connection after the heartbeat timeout", 3000);
  assert.ok(pings >= 1, "the client sent JSON pings");
  const closes = log.of("close");
  assert.equal(closes[0].code, 4000);
  assert.equal(closes[0].reason, "heartbeat timeout");
  hub.close();
  wss.close();
});

test("reconnect backoff is exponential, jittered and capped", async () => {
  // A server that refuses every upgrade with 403.
  const attempts = [];
  const srv = createServer((req, res) => res.end());
  srv.on("upgrade", (req, socket) => {
    attempts.push(Date.now());
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  cleanups.push(() => srv.close());
  const hub = newHub(`ws://127.0.0.1:${srv.address().port}/`, { WebSocket, minDelay: 20, maxDelay: 160 });
  const log = record(hub);
  await until(() => log.of("reconnecting").length >= 7, "7 reconnect attempts", 5000);
  hub.close();
  srv.close();
  const delays = log.of("reconnecting").map((r) => r.delay);
  delays.forEach((d, k) => {
    const base = Math.min(160, 20 * 2 ** k);
    assert.ok(d >= base / 2 && d <= base, `delay ${k} = ${d}, want within [${base / 2}, ${base}]`);
  });
  assert.ok(new Set(delays.map(Math.round)).size > 3, `delays ${delays} look unjittered`);
  assert.ok(attempts.length >= 6, `${attempts.length} attempts reached the server`);
});

// admin posts a control order to the hub's admin API.
async function admin(path, body) {
  const res = await fetch(`${HTTP}${path}`, { method: "POST", body: JSON.stringify(body) });
  assert.equal(res.status, 202, await res.text());
}

test("a disconnect order: with reconnect the client comes back, with reconnect:false it stops", async () => {
  const hub = newHub(`${WS}/socket/`, { ...fast, channels: ["js-d1"] });
  const log = record(hub);
  const orders = [];
  hub.on("disconnect", (d) => orders.push(d));
  await until(() => log.of("subscribed").length === 1, "subscribed");
  await admin("/hub/disconnect", { channel: "js-d1", code: 4001, reason: "maintenance" });
  await until(() => log.of("open").length === 2, "reconnected after a disconnect with reconnect");
  assert.deepEqual(orders, [{ type: "disconnect", code: 4001, reason: "maintenance", reconnect: true }]);
  assert.equal(log.of("close")[0].code, 4001);
  await until(() => log.of("subscribed").length === 2, "subscribed again");

  await admin("/hub/disconnect", { channel: "js-d1", code: 4403, reason: "banned", reconnect: false });
  await until(() => hub.state === "closed", "stopped after reconnect:false");
  assert.equal(orders[1].reconnect, false);
  assert.equal(log.of("close").at(-1).code, 4403);
  assert.equal(log.of("close").at(-1).reason, "banned");
  await sleep(300); // several backoff periods of `fast`
  assert.equal(log.of("open").length, 2, "no reconnect after reconnect:false");
});

test("a server-side unsubscribe is not undone by the next reconnect", async () => {
  const hub = newHub(`${WS}/socket/`, { ...fast, channels: ["js-u1", "js-u2"] });
  const log = record(hub);
  const unsubs = [];
  hub.on("unsubscribed", (u) => unsubs.push(u));
  await until(() => log.of("subscribed").length === 2, "subscribed");
  await admin("/hub/unsubscribe", { all: true, channel: "js-u1" });
  await until(() => unsubs.length === 1, "unsubscribed event");
  assert.deepEqual(unsubs[0], { type: "unsubscribed", channel: "js-u1", reason: "server" });
  assert.equal(hub.position("js-u1"), undefined);
  await drop("/socket/", "js-u2", []);
  await until(() => log.of("open").length === 2, "reconnected");
  await publish("js-u1", "not any more");
  await publish("js-u2", "still");
  await until(() => log.data("js-u2").includes("still"), "js-u2 message");
  assert.deepEqual(log.data("js-u1"), []);
});

// hs256 signs a JWT with the hub's test secret.
function hs256(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" }) + "." + b64(claims);
  const sig = createHmac("sha256", process.env.EDGE_SECRET).update(head).digest("base64url");
  return head + "." + sig;
}

test("a token from a function is refreshed before exp: the connection outlives its first token", async () => {
  let calls = 0;
  const token = () => {
    calls++;
    return hs256({ sub: "js", exp: Math.floor(Date.now() / 1000) + 2 });
  };
  const hub = newHub(`${WS}/jwt/`, { ...fast, token, refreshMargin: 1500 });
  const log = record(hub);
  const refreshed = [];
  hub.on("refreshed", (r) => refreshed.push(r));
  await until(() => log.of("open").length === 1, "open");
  const firstExp = Math.floor(Date.now() / 1000) + 2;
  await until(() => Date.now() / 1000 > firstExp + 1, "past the first token's exp", 5000);
  assert.ok(refreshed.length >= 1, `refreshed ${refreshed.length} times`);
  assert.ok(calls >= 2, "token() called again for the refresh");
  assert.equal(log.of("close").length, 0, "never dropped");
  assert.equal(log.of("open").length, 1);
});
