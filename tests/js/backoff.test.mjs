import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, urlForAttempt } from "../../static/wedsync/backoff.js";

test("the delay is a random share of an exponential cap (full jitter)", () => {
  assert.equal(backoffDelay(0, { random: () => 0.999999 }), 499);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000); // cap 500 * 2**3 = 4000
  assert.equal(backoffDelay(3, { random: () => 0 }), 0);
});

test("the cap stops growing at capMs, however many attempts failed", () => {
  assert.equal(backoffDelay(6, { random: () => 0.999999, capMs: 20000 }), 19999);
  assert.equal(backoffDelay(1000, { random: () => 0.5 }), 10000);
});

test("delays spread over the whole window rather than bunching at its top", () => {
  const delays = Array.from({ length: 2000 }, () => backoffDelay(4)); // window [0, 8000)
  assert.ok(delays.every((delay) => delay >= 0 && delay < 8000));
  assert.ok(delays.filter((delay) => delay < 4000).length > 800, "half the window holds about half");
});

test("a negative or fractional attempt is a programming error", () => {
  assert.throws(() => backoffDelay(-1), RangeError);
  assert.throws(() => backoffDelay(1.5), RangeError);
});

test("attempts go round the URLs in turn, so one dead node costs one attempt", () => {
  const urls = ["ws://a/ws/v1/", "ws://b/ws/v1/"];
  assert.deepEqual([0, 1, 2, 3].map((attempt) => urlForAttempt(urls, attempt)), [urls[0], urls[1], urls[0], urls[1]]);
  assert.throws(() => urlForAttempt([], 0), RangeError);
});
