// The client's budget: under 15 KB minified (the socket, resume, queue and storage modules; not
// the page that draws with it). Measured with terser, as a bundler would ship it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { minify } from "terser";

const CLIENT_MODULES = ["backoff.js", "stream.js", "outbox.js", "idb.js", "client.js"];
const BUDGET_BYTES = 15 * 1024;

test("the client minifies to under 15 KB", async () => {
  const files = Object.fromEntries(
    CLIENT_MODULES.map((name) => [name, readFileSync(new URL(`../../static/wedsync/${name}`, import.meta.url), "utf8")]),
  );
  const { code } = await minify(files, { module: true, compress: true, mangle: true });
  const size = Buffer.byteLength(code, "utf8");
  console.log(`client minified: ${size} bytes of ${BUDGET_BYTES}`);
  assert.ok(size < BUDGET_BYTES, `${size} bytes minified; the budget is ${BUDGET_BYTES}`);
});
