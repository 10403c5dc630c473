import assert from "node:assert/strict";
import { test } from "node:test";

import { TopicStream } from "../../static/wedsync/stream.js";

test("events in order are new once, and a replayed copy is a duplicate", () => {
  const stream = new TopicStream("wedding:1", { seq: 10, epoch: "e" });
  assert.equal(stream.accept({ seq: 11 }), "new");
  assert.equal(stream.accept({ seq: 13 }), "new"); // a member's seqs may skip another audience's
  assert.equal(stream.accept({ seq: 11, replay: true }), "duplicate");
  assert.equal(stream.accept({ seq: 9 }), "duplicate");
  assert.deepEqual(stream.resumeFrom(), { since: 13, epoch: "e" });
});

test("an event sent ahead of its turn does not move the resume point, and its replay is dropped", () => {
  const stream = new TopicStream("wedding:1", { seq: 10, epoch: "e" });
  assert.equal(stream.accept({ seq: 15, ahead: true }), "new");
  assert.equal(stream.resumeFrom().since, 10);
  assert.equal(stream.accept({ seq: 15, ahead: true }), "duplicate");
  assert.equal(stream.accept({ seq: 12 }), "new");
  assert.equal(stream.accept({ seq: 15, replay: true }), "duplicate", "the copy a later replay brings");
  assert.equal(stream.resumeFrom().since, 15);
  assert.equal(stream.ahead.size, 0, "seqs at or below the resume point are forgotten");
});

test("a resent alarm is told again but is not a new event", () => {
  const stream = new TopicStream("wedding:1", { seq: 20, epoch: "e" });
  assert.equal(stream.accept({ seq: 18, resent: true }), "resent");
  assert.equal(stream.resumeFrom().since, 20);
});

test("while filtered to high priority the resume point stays, so a full resubscribe replays the rest", () => {
  const stream = new TopicStream("wedding:1", { seq: 5, epoch: "e" });
  stream.filtered = true;
  assert.equal(stream.accept({ seq: 8 }), "new");
  assert.equal(stream.resumeFrom().since, 5);
  stream.filtered = false;
  assert.equal(stream.accept({ seq: 6, replay: true }), "new");
  assert.equal(stream.accept({ seq: 7, replay: true }), "new");
  assert.equal(stream.accept({ seq: 8, replay: true }), "duplicate");
  assert.equal(stream.resumeFrom().since, 8);
});

test("a recovered subscription keeps the position; an unrecovered one asks for a reload", () => {
  const fresh = new TopicStream("wedding:1");
  assert.equal(fresh.subscribed({ seq: 40, epoch: "e1", recovered: true }), true);
  assert.deepEqual(fresh.resumeFrom(), { since: 40, epoch: "e1" });

  const stale = new TopicStream("wedding:1", { seq: 3, epoch: "old" });
  stale.accept({ seq: 9, ahead: true });
  assert.equal(stale.subscribed({ seq: 50, epoch: "new", recovered: false }), false);
  assert.deepEqual(stale.resumeFrom(), { since: 3, epoch: "old" }, "nothing moves until the reload");
  stale.reset({ seq: 48, epoch: "new" });
  assert.deepEqual(stale.resumeFrom(), { since: 48, epoch: "new" });
  assert.equal(stale.ahead.size, 0);
  assert.equal(stale.accept({ seq: 48 }), "duplicate", "the snapshot already holds it");
  assert.equal(stale.accept({ seq: 49 }), "new");
});
