// The offline queue: `publish` and `sync` ops waiting for the server, one stored row per op with
// the idempotency key or op id it is sent with, so an op made in a dead zone survives a closed tab
// and, however often it is resent, lands once (the server keeps the first answer per key).

/**
 * @typedef {"queued"|"sent"|"applied"|"conflict"|"failed"} OpStatus
 * queued: stored here, not on the wire; sent: on the wire, unanswered; the rest are final.
 *
 * @typedef {object} OutboxEntry
 * @property {string} key the op's idempotency key (publish) or op id (sync)
 * @property {"publish"|"sync"} kind
 * @property {string} topic
 * @property {Record<string, unknown>} frame the op, without `ref`
 * @property {number} order position in the queue (ops go out in this order)
 * @property {string} created ISO 8601
 * @property {OpStatus} status
 *
 * @typedef {object} OutboxStorage
 * @property {() => Promise<OutboxEntry[]>} load
 * @property {(entry: OutboxEntry) => Promise<void>} put
 * @property {(key: string) => Promise<void>} remove
 */

/** @returns {string} a random id (crypto.randomUUID where the page is a secure context) */
export function randomKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Keeps entries in memory: for tests, and where IndexedDB is unavailable (private windows). */
export class MemoryStorage {
  constructor() {
    /** @type {Map<string, OutboxEntry>} */
    this.rows = new Map();
  }
  async load() {
    return [...this.rows.values()].map((row) => ({ ...row }));
  }
  /** @param {OutboxEntry} entry */
  async put(entry) {
    this.rows.set(entry.key, { ...entry });
  }
  /** @param {string} key */
  async remove(key) {
    this.rows.delete(key);
  }
}

export class Outbox {
  /** @param {OutboxStorage} storage */
  constructor(storage) {
    this.storage = storage;
    /** @type {Map<string, OutboxEntry>} */
    this.entries = new Map();
    this.lastOrder = 0;
  }

  /** Loads what an earlier page left behind; whatever was on the wire is queued again. */
  async open() {
    for (const entry of await this.storage.load()) {
      this.entries.set(entry.key, { ...entry, status: "queued" });
      this.lastOrder = Math.max(this.lastOrder, entry.order);
    }
  }

  /**
   * Stores an op before anything is sent: once this resolves, a closed tab does not lose it.
   * @param {{kind: "publish"|"sync", topic: string, frame: Record<string, unknown>, key: string}} op
   * @returns {Promise<OutboxEntry>}
   */
  async add({ kind, topic, frame, key }) {
    // Time-based, so that two tabs adding at once still interleave in the order people acted.
    this.lastOrder = Math.max(this.lastOrder + 1, Date.now() * 1000);
    /** @type {OutboxEntry} */
    const entry = { key, kind, topic, frame, order: this.lastOrder, created: new Date().toISOString(), status: "queued" };
    await this.storage.put(entry);
    this.entries.set(key, entry);
    return entry;
  }

  /** The ops not yet answered, in order. @returns {OutboxEntry[]} */
  pending() {
    return [...this.entries.values()].sort((a, b) => a.order - b.order);
  }

  /** @returns {number} */
  get size() {
    return this.entries.size;
  }

  /** @param {string} key @param {"queued"|"sent"} status */
  mark(key, status) {
    const entry = this.entries.get(key);
    if (entry) entry.status = status;
  }

  /**
   * The server answered for good (applied, conflict, or refused for a reason a resend cannot fix):
   * the row goes, so one poisoned op never blocks the ones behind it.
   * @param {string} key
   * @param {"applied"|"conflict"|"failed"} status
   * @returns {Promise<OutboxEntry|undefined>}
   */
  async settle(key, status) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    await this.storage.remove(key);
    return { ...entry, status };
  }

  /** Drops a topic's ops (the member lost access to the wedding). @param {string} topic */
  async forget(topic) {
    for (const entry of this.pending()) if (entry.topic === topic) await this.settle(entry.key, "failed");
  }
}
