// client.js against a three-node cluster behind a load balancer. Run by
// TestClientJSCluster (go test ./hub/), which starts the nodes on one
// Redis and a TCP balancer at EDGE_LB; POST EDGE_CTL/crash kills the node
// the balancer uses, points it at another node and publishes through a
// third.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import WebSocket from "ws";

const LB = process.env.EDGE_LB;
const CTL = process.env.EDGE_CTL;
assert.ok(LB && CTL, "EDGE_LB not set: run through go test ./hub/ -run TestClientJSCluster");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what, ms = 10000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
    await sleep(5);
  }
}

test("a node crashes: client.js reconnects to another node and recovers with since", async () => {
  const res = await fetch(`${LB}/socket/client.mjs`);
  assert.equal(res.status, 200);
  const dir = mkdtempSync(join(tmpdir(), "edge-client-"));
  writeFileSync(join(dir, "client.mjs"), await res.text());
  const { EdgeHub } = await import(pathToFileURL(join(dir, "client.mjs")).href);

  const hub = new EdgeHub(LB.replace(/^http/, "ws") + "/socket/", {
    WebSocket, minDelay: 40, maxDelay: 200, channels: ["room"],
  });
  const log = [];
  for (const type of ["open", "close", "message", "gap"]) hub.on(type, (ev) => log.push({ type, ev }));
  const of = (type) => log.filter((x) => x.type === type).map((x) => x.ev);
  try {
    await until(() => of("open").length === 1, "open");
    await sleep(50); // subscribed
    let r = await fetch(`${CTL}/publish?data=before`, { method: "POST" });
    assert.equal(r.status, 204);
    await until(() => of("message").length === 1, "the first message");

    r = await fetch(`${CTL}/crash`, { method: "POST" });
    assert.equal(r.status, 204);
    await until(() => of("message").length === 6, "the five messages published while away");
    assert.deepEqual(of("message").map((m) => m.data), ["before", 0, 1, 2, 3, 4]);
    assert.equal(of("gap").length, 0, "no gap: the other node recovered from Redis");
    assert.ok(of("open").length >= 2, "reconnected");
    const seqs = of("message").map((m) => m.seq);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq ${seqs[i]} after ${seqs[i - 1]}`);
  } finally {
    hub.close();
  }
});
