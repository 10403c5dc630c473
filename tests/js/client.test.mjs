import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { WedSyncClient } from "../../static/wedsync/client.js";
import { MemoryStorage, Outbox } from "../../static/wedsync/outbox.js";
import { FakeSocket, until, welcome } from "./fake_server.mjs";

const STATE = { wedding: 1, seq: 10, epoch: "e1", records: { timeline_item: [], task: [], rsvp: [] } };

function makeClient({ storage = new MemoryStorage(), loadState = async () => STATE, urls = ["ws://a/ws/v1/", "ws://b/ws/v1/"], online = true } = {}) {
  const navigator = { onLine: online };
  const window = new EventTarget();
  const client = new WedSyncClient({
    urls,
    getTicket: async () => `t${FakeSocket.opened.length + 1}`,
    loadState,
    storage,
    WebSocket: FakeSocket,
    backoff: { baseMs: 1, capMs: 2 },
    environment: { navigator, window, document: undefined },
  });
  const seen = { events: [], settled: [], statuses: [], snapshots: [] };
  client.addEventListener("event", (e) => seen.events.push(e.detail));
  client.addEventListener("settled", (e) => seen.settled.push(e.detail));
  client.addEventListener("status", (e) => seen.statuses.push(e.detail.status));
  client.addEventListener("snapshot", (e) => seen.snapshots.push(e.detail.state));
  return { client, seen, navigator, window };
}

const socket = () => FakeSocket.opened.at(-1);

async function connectAndSubscribe(client) {
  await until(() => FakeSocket.opened.length > 0, "a socket");
  socket().deliver(welcome());
  await until(() => socket().sent.some((f) => f.op === "subscribe" && !f.answered), "subscribe");
  socket().reply("subscribe", { seq: 10, epoch: "e1", recovered: true, presence: { online: {} } });
  await until(() => client.ready, "ready");
}

beforeEach(() => {
  FakeSocket.opened = [];
});

test("a session user connects with a ticket and resumes from the snapshot it loaded", async () => {
  const { client, seen } = makeClient();
  await client.start();
  await client.follow(1);
  await connectAndSubscribe(client);
  assert.match(socket().url, /^ws:\/\/a\/ws\/v1\/\?ticket=t1$/);
  assert.deepEqual(socket().protocols, ["wedsync.v1"]);
  const subscribe = socket().sent.find((f) => f.op === "subscribe");
  assert.equal(subscribe.since, 10);
  assert.equal(subscribe.epoch, "e1");
  assert.equal(seen.snapshots.length, 1);
  socket().deliver({ op: "event", topic: "wedding:1", seq: 11, type: "chat.message", data: { text: "hi" } });
  socket().deliver({ op: "event", topic: "wedding:1", seq: 11, type: "chat.message", data: { text: "hi" }, replay: true });
  socket().deliver({ op: "event", topic: "wedding:1", seq: 9, type: "chat.message", data: { text: "old" } });
  assert.deepEqual(seen.events.map((e) => e.event.seq), [11], "each event once");
  client.stop();
});

test("an op made offline waits in the store, is sent once online, and a resend after a lost reply keeps its key", async () => {
  const storage = new MemoryStorage();
  const { client, seen, navigator, window } = makeClient({ storage, online: false });
  await client.start();
  assert.equal(client.status, "offline");
  const entry = await client.publish({ topic: "wedding:1", type: "chat.message", data: { text: "from the cellar" } });
  assert.equal(client.queued, 1);
  assert.equal((await storage.load())[0].frame.idempotency_key, entry.key, "stored before anything is sent");

  navigator.onLine = true;
  window.dispatchEvent(new Event("online"));
  await client.follow(1);
  await connectAndSubscribe(client);
  await until(() => socket().sent.some((f) => f.op === "publish"), "the publish");
  const first = socket().sent.find((f) => f.op === "publish");
  assert.equal(first.idempotency_key, entry.key);

  socket().drop(); // the reply is lost with the connection
  await until(() => FakeSocket.opened.length === 2, "a reconnect");
  assert.match(socket().url, /^ws:\/\/b\//, "the next attempt goes to the other node");
  await connectAndSubscribe(client);
  await until(() => socket().sent.some((f) => f.op === "publish"), "the resend");
  const again = socket().sent.find((f) => f.op === "publish");
  assert.equal(again.idempotency_key, entry.key, "the server keeps the first answer for this key");
  socket().reply("publish", { seq: 12, id: "x", duplicate: true });
  await until(() => seen.settled.length === 1, "settled");
  assert.equal(seen.settled[0].entry.status, "applied");
  assert.equal(client.queued, 0);
  assert.deepEqual(await storage.load(), []);
  client.stop();
});

test("ops go out one at a time in the order they were made, and a refused one does not block the rest", async () => {
  const { client, seen } = makeClient();
  await client.start();
  await client.follow(1);
  await client.sync({ topic: "wedding:1", record: "task", id: 4, baseVersion: 2, changes: { status: "done" } });
  await client.publish({ topic: "wedding:1", type: "chat.message", data: { text: "done!" } });
  await connectAndSubscribe(client);
  await until(() => socket().sent.some((f) => f.op === "sync"), "the sync");
  assert.equal(socket().sent.filter((f) => f.op === "publish").length, 0, "the second waits for the first's answer");
  socket().reply("sync", { code: "forbidden", message: "no" }, "error");
  await until(() => socket().sent.some((f) => f.op === "publish"), "the publish");
  socket().reply("publish", { seq: 11, id: "y" });
  await until(() => seen.settled.length === 2, "both settled");
  assert.deepEqual(seen.settled.map((s) => s.entry.status), ["failed", "applied"]);
  assert.equal(seen.settled[0].error.code, "forbidden");
  client.stop();
});

test("a kept conflict settles as conflict, with the server's reply for the prompt", async () => {
  const { client, seen } = makeClient();
  await client.start();
  await client.follow(1);
  await connectAndSubscribe(client);
  await client.sync({ topic: "wedding:1", record: "timeline_item", id: 7, baseVersion: 3, changes: { title: "First dance" } });
  await until(() => socket().sent.some((f) => f.op === "sync"), "the sync");
  socket().reply("sync", { outcome: "conflict", conflict: 5, values: { title: "Cake" } });
  await until(() => seen.settled.length === 1, "settled");
  assert.equal(seen.settled[0].entry.status, "conflict");
  assert.equal(seen.settled[0].reply.conflict, 5);
  client.stop();
});

test("an unrecovered resume reloads the snapshot and subscribes again from its seq", async () => {
  let loads = 0;
  const { client, seen } = makeClient({ loadState: async () => ({ ...STATE, seq: 10 + 100 * loads++, epoch: `e${loads}` }) });
  await client.start();
  await client.follow(1);
  await until(() => FakeSocket.opened.length > 0, "a socket");
  socket().deliver(welcome());
  await until(() => socket().sent.some((f) => f.op === "subscribe"), "subscribe");
  socket().reply("subscribe", { seq: 500, epoch: "other", recovered: false, presence: { online: {} } });
  await until(() => socket().sent.filter((f) => f.op === "subscribe").length === 2, "the second subscribe");
  const second = socket().sent.filter((f) => f.op === "subscribe")[1];
  assert.equal(loads, 2);
  assert.equal(second.since, 110);
  assert.equal(second.epoch, "e2");
  assert.equal(seen.snapshots.length, 2);
  client.stop();
});

test("a refused origin or a device over the limit stops reconnecting and says why", async () => {
  const { client, seen } = makeClient();
  await client.start();
  await until(() => FakeSocket.opened.length === 1, "a socket");
  socket().deliver(welcome());
  socket().drop(4029);
  await until(() => client.status === "stopped", "stopped");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(FakeSocket.opened.length, 1, "no reconnect");
  assert.match(client.stoppedReason, /too many devices/);
  assert.ok(seen.statuses.includes("online"));
});

test("heartbeats go at the welcome's interval and carry the previous round trip", async () => {
  const { client } = makeClient();
  await client.start();
  await until(() => FakeSocket.opened.length > 0, "a socket");
  socket().deliver({ ...welcome(), heartbeat_interval: 0.005 });
  for (let beat = 0; beat < 3; beat++) {
    await until(() => socket().sent.some((f) => f.op === "heartbeat" && !f.answered), "a heartbeat");
    socket().reply("heartbeat", { server_time: "x" });
  }
  await until(() => socket().sent.filter((f) => f.op === "heartbeat").length >= 3, "three heartbeats");
  const beats = socket().sent.filter((f) => f.op === "heartbeat");
  assert.equal(beats[0].rtt, undefined, "nothing measured before the first");
  assert.ok(beats.slice(1, 3).every((beat) => Number.isInteger(beat.rtt) && beat.rtt >= 0));
  client.stop();
});

test("slow round trips switch the subscription to high priority, and fast ones back", async () => {
  const { client } = makeClient();
  await client.start();
  await client.follow(1);
  await connectAndSubscribe(client);
  for (const rtt of [2000, 1800, 2500]) client.measured(rtt);
  await until(() => socket().sent.some((f) => f.op === "subscribe" && f.min_priority === "high"), "a high-priority resubscribe");
  socket().reply("subscribe", { seq: 10, epoch: "e1", recovered: true, presence: { online: {} } });
  await until(() => client.streams.get("wedding:1").filtered, "filtered");
  for (const rtt of [90, 80]) client.measured(rtt);
  await until(() => socket().sent.filter((f) => f.op === "subscribe").length === 3, "a full resubscribe");
  assert.equal(socket().sent.at(-1).min_priority, undefined);
  client.stop();
});

test("a browser that reports a 2G network subscribes to high priority from the start", async () => {
  const { client, navigator } = makeClient();
  navigator.connection = { effectiveType: "2g", saveData: false };
  await client.start();
  await client.follow(1);
  await until(() => FakeSocket.opened.length > 0, "a socket");
  socket().deliver(welcome());
  await until(() => socket().sent.some((f) => f.op === "subscribe"), "subscribe");
  assert.equal(socket().sent.find((f) => f.op === "subscribe").min_priority, "high");
  client.stop();
});

test("a socket that goes silent for 2.5 heartbeat intervals is closed and replaced", async () => {
  const { client } = makeClient();
  await client.start();
  await until(() => FakeSocket.opened.length === 1, "a socket");
  socket().deliver({ ...welcome(), heartbeat_interval: 0.01 });
  // The server never answers: the heartbeats go unanswered and nothing else arrives.
  await until(() => FakeSocket.opened.length === 2, "a replacement socket");
  assert.equal(FakeSocket.opened[0].closedWith, 3008);
  client.stop();
});

function jwt(expiresInSeconds) {
  const body = Buffer.from(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + expiresInSeconds })).toString("base64url");
  return `h.${body}.s`;
}

test("a token user offers the bearer subprotocol and refreshes in-band a minute before expiry", async () => {
  let issued = 0;
  const client = new WedSyncClient({
    urls: ["ws://a/ws/v1/"],
    getToken: async () => jwt(60 + 5.01 + issued++ * 0), // expires 65 s out: refresh due in about 5 s
    loadState: async () => STATE,
    WebSocket: FakeSocket,
    backoff: { baseMs: 1, capMs: 2 },
    environment: { navigator: { onLine: true }, window: new EventTarget() },
  });
  const realSetTimeout = globalThis.setTimeout;
  // Time passes quickly for the refresh timer only (anything scheduled at 5 s or more).
  globalThis.setTimeout = (fn, delay, ...args) => realSetTimeout(fn, delay >= 5000 ? 1 : delay, ...args);
  try {
    await client.start();
    await until(() => FakeSocket.opened.length === 1, "a socket");
    assert.equal(socket().protocols[0], "wedsync.v1");
    assert.match(socket().protocols[1], /^bearer\.h\./);
    assert.ok(!socket().url.includes("ticket"), "no credential in the URL");
    socket().deliver(welcome());
    await until(() => socket().sent.some((f) => f.op === "auth"), "an auth op");
    const auth = socket().sent.find((f) => f.op === "auth");
    assert.match(auth.token, /^h\./);
    socket().reply("auth", { expires_at: Math.floor(Date.now() / 1000) + 900 });
    assert.equal(FakeSocket.opened.length, 1, "refreshed without reconnecting");
  } finally {
    globalThis.setTimeout = realSetTimeout;
    client.stop();
  }
});

test("a session that ended stops the client instead of retrying forever", async () => {
  const client = new WedSyncClient({
    urls: ["ws://a/ws/v1/"],
    getTicket: async () => {
      throw Object.assign(new Error("unauthorized"), { status: 403 });
    },
    loadState: async () => STATE,
    WebSocket: FakeSocket,
    environment: { navigator: { onLine: true }, window: new EventTarget() },
  });
  await client.start();
  await until(() => client.status === "stopped", "stopped");
  assert.match(client.stoppedReason, /Sign in again/);
  assert.equal(FakeSocket.opened.length, 0);
});

test("battery level and charging go out with presence where the browser has the Battery Status API", async () => {
  const battery = Object.assign(new EventTarget(), { level: 0.42, charging: false });
  const navigator = { onLine: true, getBattery: async () => battery };
  const client = new WedSyncClient({
    urls: ["ws://a/ws/v1/"],
    getTicket: async () => "t",
    loadState: async () => STATE,
    WebSocket: FakeSocket,
    reportBattery: true,
    environment: { navigator, window: new EventTarget() },
  });
  await client.start();
  await client.follow(1);
  await connectAndSubscribe(client);
  await until(() => socket().sent.some((f) => f.op === "presence"), "a presence op");
  assert.deepEqual(socket().sent.find((f) => f.op === "presence").state, { battery: 42, charging: false });
  battery.charging = true;
  battery.dispatchEvent(new Event("chargingchange"));
  await until(() => socket().sent.filter((f) => f.op === "presence").length === 2, "a second presence op");
  assert.deepEqual(socket().sent.filter((f) => f.op === "presence")[1].state, { battery: 42, charging: true });
  client.stop();
});

test("going offline closes the socket at once, and coming back reconnects without waiting out the backoff", async () => {
  const { client, navigator, window } = makeClient();
  client.options.backoff = { baseMs: 60000, capMs: 60000, random: () => 0.99 };
  await client.start();
  await until(() => FakeSocket.opened.length === 1, "a socket");
  socket().deliver(welcome());
  navigator.onLine = false;
  window.dispatchEvent(new Event("offline"));
  await until(() => client.status === "offline", "offline");
  assert.equal(FakeSocket.opened[0].closedWith, 3000);
  navigator.onLine = true;
  window.dispatchEvent(new Event("online"));
  await until(() => FakeSocket.opened.length === 2, "a reconnect at once");
  client.stop();
});

test("a network that turns 2G subscribes again at high priority, at once", async () => {
  const { client, navigator } = makeClient();
  navigator.connection = Object.assign(new EventTarget(), { effectiveType: "4g", saveData: false });
  await client.start();
  await client.follow(1);
  await connectAndSubscribe(client);
  navigator.connection.effectiveType = "2g";
  navigator.connection.dispatchEvent(new Event("change"));
  await until(() => socket().sent.some((f) => f.op === "subscribe" && f.min_priority === "high"), "a high-priority resubscribe");
  assert.equal(client.streams.get("wedding:1").filtered, true, "filtered from the moment it is asked for");
  navigator.connection.dispatchEvent(new Event("change"));
  assert.equal(socket().sent.filter((f) => f.op === "subscribe").length, 2, "asked once, not again while unanswered");
  client.stop();
});

test("ops wait for their wedding's subscription: never sent before it, never blocked by another wedding's", async () => {
  const storage = new MemoryStorage();
  const earlier = new Outbox(storage);
  await earlier.open();
  const elsewhere = { op: "publish", topic: "wedding:2", type: "chat.message", data: { text: "other wedding" }, idempotency_key: "k2" };
  await earlier.add({ kind: "publish", topic: "wedding:2", frame: elsewhere, key: "k2" });
  const here = { op: "publish", topic: "wedding:1", type: "chat.message", data: { text: "this wedding" }, idempotency_key: "k1" };
  await earlier.add({ kind: "publish", topic: "wedding:1", frame: here, key: "k1" });

  const { client, seen } = makeClient({ storage });
  await client.start();
  await until(() => FakeSocket.opened.length === 1, "a socket");
  socket().deliver(welcome()); // welcomed before the page follows any wedding
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(socket().sent.filter((f) => f.op === "publish").length, 0, "nothing goes out unsubscribed");
  const following = client.follow(1); // resolves once its subscription is answered
  await until(() => socket().sent.some((f) => f.op === "subscribe"), "subscribe");
  socket().reply("subscribe", { seq: 10, epoch: "e1", recovered: true, presence: { online: {} } });
  await following;
  await until(() => socket().sent.some((f) => f.op === "publish"), "the publish");
  assert.deepEqual(socket().sent.filter((f) => f.op === "publish").map((f) => f.idempotency_key), ["k1"]);
  socket().reply("publish", { seq: 11, id: "x" });
  await until(() => seen.settled.length === 1, "settled");
  assert.deepEqual(client.outbox.pending().map((e) => e.key), ["k2"], "kept for a page that follows wedding 2");
  client.stop();
});

test("a busy node's refusal is waited out, and an emergency waiting to go out asks to be let in all the same", async () => {
  const { client, navigator, window } = makeClient({ online: false });
  await client.start();
  await client.follow(1);
  await client.publish({ topic: "wedding:1", type: "chat.message", data: { text: "running late" } });
  navigator.onLine = true;
  window.dispatchEvent(new Event("online"));
  await until(() => FakeSocket.opened.length === 1, "a socket");
  assert.doesNotMatch(socket().url, /urgent/, "a chat message is no reason to skip the queue");

  socket().deliver({ op: "error", code: "unavailable", message: "This node is too busy for now", retry_after: 0.2 });
  const refusedAt = Date.now();
  socket().drop(1013);
  await until(() => FakeSocket.opened.length === 2, "the next try");
  assert.ok(Date.now() - refusedAt >= 190, "waited for retry_after, not the 2 ms backoff");

  await client.publish({ topic: "wedding:1", type: "emergency.alert", data: { message: "Fire by the arch" } });
  socket().drop(1013);
  await until(() => FakeSocket.opened.length === 3, "the try after");
  assert.match(socket().url, /^ws:\/\/a\/ws\/v1\/\?urgent=1&ticket=t3$/, "no user known yet: no affinity");
  client.stop();
});

test("after the first welcome, every reconnect names the user, so a balancer keeps one person's devices together", async () => {
  const { client } = makeClient();
  await client.start();
  await until(() => FakeSocket.opened.length === 1, "a socket");
  assert.doesNotMatch(socket().url, /u=/, "nobody known before the first welcome");
  socket().deliver(welcome());
  await until(() => client.status === "online", "online");
  socket().drop();
  await until(() => FakeSocket.opened.length === 2, "a reconnect");
  assert.match(socket().url, new RegExp(`\\?u=${welcome().user.id}&ticket=t2$`));

  // Refused by a busy node before its welcome: one try without the user, so the balancer may choose another node.
  socket().deliver({ op: "error", code: "unavailable", message: "busy", retry_after: 0.01 });
  socket().drop(1013);
  await until(() => FakeSocket.opened.length === 3, "the try after the refusal");
  assert.match(socket().url, /\?ticket=t3$/);
  socket().drop();
  await until(() => FakeSocket.opened.length === 4, "the next try");
  assert.match(socket().url, /\?u=3&ticket=t4$/);
  client.stop();
});

test("a subscribe answered unavailable (the database restarting) is asked again on the same socket", async () => {
  const { client } = makeClient();
  await client.start();
  await client.follow(1);
  await until(() => FakeSocket.opened.length > 0, "a socket");
  socket().deliver(welcome());
  await until(() => socket().sent.some((f) => f.op === "subscribe" && !f.answered), "subscribe");
  socket().reply("subscribe", { code: "unavailable", message: "The database is not answering", retry_after: 0.05 }, "error");
  await until(() => socket().sent.filter((f) => f.op === "subscribe").length === 2, "the subscribe asked again");
  socket().reply("subscribe", { seq: 10, epoch: "e1", recovered: true, presence: { online: {} } });
  await until(() => client.ready, "ready");
  assert.equal(FakeSocket.opened.length, 1, "on the same socket");
  client.stop();
});
