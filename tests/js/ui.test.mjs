import assert from "node:assert/strict";
import { test } from "node:test";

import { label, wallTimeOf, wallTimeToIso } from "../../static/wedsync/ui.js";

test("a wall time in the wedding's zone becomes the right instant, across a DST change", () => {
  // Lisbon is UTC+1 in summer: 19:30 local is 18:30 UTC.
  assert.equal(wallTimeToIso("2027-06-12T17:00:00Z", "19:30", "Europe/Lisbon"), "2027-06-12T18:30:00.000Z");
  assert.equal(wallTimeOf("2027-06-12T18:30:00Z", "Europe/Lisbon"), "19:30");
  // New York on the day summer time ends (2027-11-07): 14:00 local is 19:00 UTC (EST).
  assert.equal(wallTimeToIso("2027-11-07T15:00:00Z", "14:00", "America/New_York"), "2027-11-07T19:00:00.000Z");
  assert.equal(wallTimeToIso("2027-06-12T17:00:00Z", "7pm", "Europe/Lisbon"), null);
});

test("the same local day is kept where it differs from UTC's", () => {
  // 23:30 on 12 June in Auckland is 11:30 UTC on the 12th; moving it to 08:00 stays on the 12th local.
  assert.equal(wallTimeToIso("2027-06-12T11:30:00Z", "08:00", "Pacific/Auckland"), "2027-06-11T20:00:00.000Z");
});

test("words for people from protocol values", () => {
  assert.equal(label("in_progress"), "In progress");
  assert.equal(label(""), "");
});
