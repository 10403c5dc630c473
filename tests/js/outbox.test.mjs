import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStorage, Outbox, randomKey } from "../../static/wedsync/outbox.js";

const op = (key, topic = "wedding:1") => ({ kind: "publish", topic, key, frame: { op: "publish", topic, idempotency_key: key } });

/** An opened outbox on `storage` holding ops with `keys`, added in that order. */
async function outboxWith(storage, ...keys) {
  const outbox = new Outbox(storage);
  await outbox.open();
  for (const key of keys) await outbox.add(op(key));
  return outbox;
}

test("ops are stored before they are sent and survive a reopened page, in order", async () => {
  const storage = new MemoryStorage();
  const first = await outboxWith(storage, "a", "b", "c");
  first.mark("a", "sent");

  const reopened = new Outbox(storage);
  await reopened.open();
  assert.deepEqual(reopened.pending().map((entry) => entry.key), ["a", "b", "c"]);
  assert.equal(reopened.pending()[0].status, "queued", "what was on the wire is sent again, with the same key");
  assert.equal(reopened.pending()[0].frame.idempotency_key, "a");
  await reopened.add(op("d"));
  assert.deepEqual(reopened.pending().map((entry) => entry.key), ["a", "b", "c", "d"], "new ops go after old ones");
});

test("a settled op leaves the queue and the store, whatever its outcome", async () => {
  const storage = new MemoryStorage();
  const outbox = await outboxWith(storage, "a", "b");
  assert.equal((await outbox.settle("a", "failed")).status, "failed");
  assert.equal(outbox.pending()[0].key, "b", "a refused op does not block the next");
  assert.equal(outbox.size, 1);
  assert.deepEqual((await storage.load()).map((row) => row.key), ["b"]);
  assert.equal(await outbox.settle("a", "applied"), undefined, "settling twice is harmless");
});

test("losing a wedding drops its queued ops only", async () => {
  const outbox = new Outbox(new MemoryStorage());
  await outbox.open();
  await outbox.add(op("a", "wedding:1"));
  await outbox.add(op("b", "wedding:2"));
  await outbox.forget("wedding:1");
  assert.deepEqual(outbox.pending().map((entry) => entry.key), ["b"]);
});

test("keys are random and distinct", () => {
  const keys = new Set(Array.from({ length: 1000 }, randomKey));
  assert.equal(keys.size, 1000);
});
