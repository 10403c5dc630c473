// The WedSync realtime client for browsers (docs/protocol.md, version 1): one socket per device,
// resumed wherever it left off, with an offline queue that lands each op once.

import { backoffDelay, urlForAttempt } from "./backoff.js";
import { MemoryStorage, Outbox, randomKey } from "./outbox.js";
import { TopicStream } from "./stream.js";

/** Closes after which reconnecting would only be refused again. */
const FINAL_CLOSES = new Map([
  [4403, "This page's address is not allowed to connect."],
  [4029, "You are connected on too many devices; this one was signed out."],
]);
/** Refusals a resend cannot fix: the op is dropped from the queue and reported. */
const FINAL_REFUSALS = new Set(["forbidden", "invalid", "not_found", "too_large", "bad_json", "unknown_op"]);
const SESSION_ENDED = "Your session has ended. Sign in again.";
const POOR_NETWORKS = new Set(["slow-2g", "2g"]);
const POOR_RTT_MS = 1500;

/**
 * @typedef {object} ClientOptions
 * @property {string[]} urls socket URLs (`wss://host/ws/v1/`), tried in turn
 * @property {() => Promise<string>} [getTicket] session users: a single-use ticket (POST /api/v1/realtime/tickets/)
 * @property {() => Promise<string>} [getToken] token users: a current access token (refreshed before it expires)
 * @property {(wedding: number) => Promise<any>} loadState GET /api/v1/weddings/{id}/state/
 * @property {import("./outbox.js").OutboxStorage} [storage] where queued ops live (default: memory)
 * @property {boolean} [reportBattery] send the Battery Status API's level with presence
 * @property {string} [affinity] the user's id, so that a balancer puts one person's devices on one node (learnt from the first welcome otherwise)
 * @property {any} [WebSocket] the WebSocket class (default: the global one)
 * @property {{baseMs?: number, capMs?: number, random?: () => number}} [backoff]
 * @property {any} [environment] navigator/document/window stand-ins (default: the globals)
 */

/** An error whose `code` is the protocol's (or "disconnected"). */
export class RequestError extends Error {
  /** @param {string} code @param {string} message @param {any} [detail] */
  constructor(code, message, detail) {
    super(message);
    this.code = code;
    this.detail = detail;
  }
}

export class WedSyncClient extends EventTarget {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    this.options = options;
    this.outbox = new Outbox(options.storage ?? new MemoryStorage());
    this.env = options.environment ?? { navigator: globalThis.navigator, document: globalThis.document, window: globalThis.window };
    /** @type {Map<string, TopicStream>} */
    this.streams = new Map();
    /** @type {Map<string, {resolve: (frame: any) => void, reject: (error: Error) => void}>} */
    this.waiting = new Map();
    /** @type {"idle"|"connecting"|"online"|"reconnecting"|"offline"|"stopped"} */
    this.status = "idle";
    this.stoppedReason = "";
    this.attempt = 0;
    this.refCount = 0;
    this.socket = null;
    this.welcome = null;
    this.ready = false; // welcomed and every followed topic subscribed
    this.rtts = []; // the last three heartbeat round trips, newest last
    this.lastHeard = 0;
    this.timers = new Set();
    this.flushing = false;
    this.unauthorizedCloses = 0;
    this.retryAfterMs = 0;
    /** @type {string | null} the balancer's key for this person's devices (`?u=`) */
    this.affinity = options.affinity ?? null;
    this.skipAffinityOnce = false;
    this.battery = null;
    /** @type {Map<string, any[]>} topics being reloaded: their events wait here */
    this.reloading = new Map();
  }

  // --- Lifecycle ------------------------------------------------------------------------------

  /** Opens the queue left by an earlier page and connects. */
  async start() {
    await this.outbox.open();
    this.outboxChanged();
    this.watchDevice();
    this.connect();
  }

  /** Closes for good (logout, page teardown). */
  stop(reason = "stopped") {
    this.stoppedReason = reason;
    this.setStatus("stopped");
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.socket?.close(1000);
  }

  /**
   * Follows a wedding: loads its state, then keeps it current over the socket. With `history`,
   * the first subscription replays that many seqs from before the snapshot (the recent chat a
   * page opens on); record events among them are older than the snapshot's versions.
   * @param {number} wedding
   * @param {{history?: number}} [options]
   */
  async follow(wedding, { history = 0 } = {}) {
    const topic = `wedding:${wedding}`;
    if (this.streams.has(topic)) return;
    const stream = new TopicStream(topic);
    await this.reload(stream);
    if (history > 0 && stream.seq !== null) stream.seq = Math.max(0, stream.seq - history);
    // Only now does a (re)connect subscribe it: never from before its snapshot.
    this.streams.set(topic, stream);
    if (this.welcome) await this.subscribe(stream);
  }

  // --- Ops ------------------------------------------------------------------------------------

  /**
   * Queues a publish; it is sent at once when online and lands once however often it is resent.
   * @param {{topic: string, type: string, data: object, to?: string[], priority?: string}} op
   */
  async publish({ topic, type, data, to, priority }) {
    const key = randomKey();
    const frame = { op: "publish", topic, type, data, idempotency_key: key };
    if (to) frame.to = to;
    if (priority) frame.priority = priority;
    return this.enqueue({ kind: "publish", topic, frame, key });
  }

  /**
   * Queues a change of a shared record (`id` null creates; `remove` deletes).
   * @param {{topic: string, record: string, id: number|null, baseVersion: number|null, changes?: object, remove?: boolean}} op
   */
  async sync({ topic, record, id, baseVersion, changes = {}, remove = false }) {
    const key = randomKey();
    const frame = { op: "sync", topic, record, id, base_version: baseVersion, changes, op_id: key };
    if (remove) frame.delete = true;
    return this.enqueue({ kind: "sync", topic, frame, key });
  }

  /** Acknowledges an emergency or critical event (not queued: a later resend asks again). */
  ack(topic, seq) {
    this.send({ op: "ack", topic, seq });
  }

  /** Sets this device's presence in a wedding (not queued: only the newest state matters). */
  async setPresence(topic, state) {
    return this.request({ op: "presence", topic, state });
  }

  /**
   * Sends a frame that expects a reply and resolves with the reply's `data`.
   * @param {Record<string, unknown>} frame
   * @returns {Promise<any>}
   */
  request(frame) {
    if (!this.socket || this.socket.readyState !== 1) {
      return Promise.reject(new RequestError("disconnected", "Not connected."));
    }
    const ref = `r${++this.refCount}`;
    return new Promise((resolve, reject) => {
      this.waiting.set(ref, { resolve, reject });
      this.send({ ...frame, ref });
    });
  }

  /** @returns {number} ops waiting for the server */
  get queued() {
    return this.outbox.size;
  }

  // --- Connecting -----------------------------------------------------------------------------

  async connect() {
    if (this.status === "stopped") return;
    if (this.env.navigator && this.env.navigator.onLine === false) {
      this.setStatus("offline");
      return;
    }
    this.setStatus(this.welcome || this.attempt > 0 ? "reconnecting" : "connecting");
    const url = urlForAttempt(this.options.urls, this.attempt);
    const protocols = ["wedsync.v1"];
    const params = [];
    // After a busy node's refusal, one try without it: the balancer's hashing would send it back there.
    if (this.affinity && !this.skipAffinityOnce) params.push(`u=${encodeURIComponent(this.affinity)}`);
    this.skipAffinityOnce = false;
    // An emergency waiting to go out (for a wedding this page follows) asks a busy node to let this socket in all the same.
    const urgent = this.outbox.pending().some((entry) => entry.frame.type === "emergency.alert" && this.streams.has(entry.topic));
    if (urgent) params.push("urgent=1");
    let target = params.length ? `${url}${url.includes("?") ? "&" : "?"}${params.join("&")}` : url;
    try {
      if (this.options.getTicket) {
        const ticket = await this.options.getTicket();
        target = `${target}${target.includes("?") ? "&" : "?"}ticket=${encodeURIComponent(ticket)}`;
      } else if (this.options.getToken) {
        protocols.push(`bearer.${await this.options.getToken()}`);
      }
    } catch (error) {
      if (error && (error.status === 401 || error.status === 403)) {
        this.stop(SESSION_ENDED);
      } else {
        this.retryLater();
      }
      return;
    }
    if (this.status === "stopped") return;
    const SocketClass = this.options.WebSocket ?? globalThis.WebSocket;
    const socket = new SocketClass(target, protocols);
    this.socket = socket;
    socket.onmessage = (message) => this.received(socket, message.data);
    socket.onclose = (close) => this.closed(socket, close.code);
    socket.onerror = () => {};
  }

  retryLater() {
    if (this.status === "stopped") return;
    // Offline, the "online" event reconnects at once: no timer meanwhile.
    if (this.env.navigator && this.env.navigator.onLine === false) return this.setStatus("offline");
    // A retry_after is told to every socket a node refuses at once: spread their returns over half as long again.
    const told = this.retryAfterMs * (1 + 0.5 * Math.random());
    const delay = Math.max(backoffDelay(this.attempt, this.options.backoff), told);
    this.retryAfterMs = 0;
    this.attempt += 1;
    this.setStatus("reconnecting");
    this.later(delay, () => this.connect());
  }

  /** @param {any} socket @param {number} code */
  closed(socket, code) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.ready = false;
    if (code === 1013 && !this.welcome) this.skipAffinityOnce = true;
    this.welcome = null;
    for (const stream of this.streams.values()) stream.live = false;
    for (const [, waiter] of this.waiting) waiter.reject(new RequestError("disconnected", "The connection was lost."));
    this.waiting.clear();
    for (const entry of this.outbox.pending()) this.outbox.mark(entry.key, "queued");
    this.outboxChanged();
    if (this.status === "stopped") return;
    if (FINAL_CLOSES.has(code)) return this.stop(FINAL_CLOSES.get(code));
    if (code === 4401 && ++this.unauthorizedCloses >= 3) return this.stop(SESSION_ENDED);
    this.retryLater();
  }

  /** @param {any} socket @param {string} text */
  received(socket, text) {
    if (socket !== this.socket) return;
    this.lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    switch (frame.op) {
      case "welcome":
        return this.welcomed(frame);
      case "reply":
        return this.replied(frame);
      case "event":
        return this.event(frame);
      case "presence_diff":
        return this.emit("presence", { topic: frame.topic, diff: frame });
      case "unsubscribed":
        this.streams.delete(frame.topic);
        this.outbox.forget(frame.topic).then(() => this.outboxChanged());
        return this.emit("unsubscribed", frame);
      case "error":
        // Told before a close (rate limited, or a busy or starting node): the next try waits as long.
        if (frame.retry_after) this.retryAfterMs = frame.retry_after * 1000;
        return this.emit("server-error", frame);
      default:
        return undefined;
    }
  }

  async welcomed(frame) {
    this.welcome = frame;
    this.affinity ??= String(frame.user.id);
    this.attempt = 0;
    this.unauthorizedCloses = 0;
    this.setStatus("online");
    this.emit("welcome", frame);
    this.heartbeat(frame.heartbeat_interval * 1000);
    this.scheduleTokenRefresh();
    const socket = this.socket;
    for (const stream of this.streams.values()) {
      await this.subscribe(stream);
      if (socket !== this.socket) return;
    }
    this.ready = true;
    this.flush();
  }

  replied(frame) {
    const waiter = this.waiting.get(frame.ref);
    if (!waiter) return;
    this.waiting.delete(frame.ref);
    if (frame.status === "ok") waiter.resolve(frame.data ?? {});
    else waiter.reject(new RequestError(frame.error.code, frame.error.message, frame.error));
  }

  event(frame) {
    const held = this.reloading.get(frame.topic);
    if (held) return void held.push(frame);
    const stream = this.streams.get(frame.topic);
    if (!stream) return;
    const verdict = stream.accept(frame);
    if (verdict !== "duplicate") this.emit("event", { event: frame, resent: verdict === "resent" });
  }

  // --- Subscriptions --------------------------------------------------------------------------

  /** @param {TopicStream} stream */
  async subscribe(stream) {
    const minPriority = this.poorConnection() ? "high" : "low";
    const frame = { op: "subscribe", topic: stream.topic, ...stream.resumeFrom() };
    stream.asked = minPriority;
    // Filtered from the moment it is asked for; unfiltered only once the full subscription has
    // replaced the filtered one (until then, events still skip the lower priorities).
    if (minPriority === "high") {
      frame.min_priority = "high";
      stream.filtered = true;
    }
    let data;
    try {
      data = await this.request(frame);
    } catch (error) {
      if (error.code === "forbidden") {
        this.streams.delete(stream.topic);
        this.emit("unsubscribed", { topic: stream.topic, reason: "forbidden" });
      } else if (error.code === "unavailable" || error.code === "server_error" || error.code === "rate_limited") {
        // The socket stays open (the database restarting, a busy node): ask again on it later.
        const socket = this.socket;
        const wait = error.detail?.retry_after ? error.detail.retry_after * 1000 : backoffDelay(2, this.options.backoff);
        this.later(wait, () => {
          if (socket && this.socket === socket && this.streams.get(stream.topic) === stream && !stream.live) this.subscribe(stream);
        });
      }
      return;
    }
    stream.filtered = minPriority === "high";
    this.emit("presence", { topic: stream.topic, snapshot: data.presence });
    if (!stream.subscribed(data)) {
      await this.reload(stream);
      await this.subscribe(stream);
      return;
    }
    stream.live = true;
    this.sendBattery(stream.topic);
    if (this.ready) this.flush();
  }

  /** Reloads a wedding's records from the snapshot endpoint (on follow, and on `recovered: false`). */
  async reload(stream) {
    this.reloading.set(stream.topic, []);
    try {
      const state = await this.options.loadState(Number(stream.topic.split(":")[1]));
      stream.reset(state);
      this.emit("snapshot", { topic: stream.topic, state });
    } finally {
      const held = this.reloading.get(stream.topic) ?? [];
      this.reloading.delete(stream.topic);
      for (const frame of held) this.event(frame);
    }
  }

  // --- The queue ------------------------------------------------------------------------------

  async enqueue(op) {
    const entry = await this.outbox.add(op);
    this.outboxChanged();
    this.flush();
    return entry;
  }

  /** Sends queued ops one at a time, oldest first, while the socket is ready. */
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (let entry = this.sendable(); entry && this.ready; entry = this.sendable()) {
        this.outbox.mark(entry.key, "sent");
        this.outboxChanged();
        let data;
        try {
          data = await this.request(entry.frame);
        } catch (error) {
          if (!(await this.refused(entry, error))) break;
          continue;
        }
        const status = data.outcome === "conflict" ? "conflict" : "applied";
        const settled = await this.outbox.settle(entry.key, status);
        this.emit("settled", { entry: settled, reply: data });
        this.outboxChanged();
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * The oldest op of a wedding subscribed on this socket: ops keep their order within a wedding,
   * and one of a wedding this page does not follow waits for a page that does.
   */
  sendable() {
    return this.outbox.pending().find((entry) => this.streams.get(entry.topic)?.live);
  }

  /** Handles a refused op; returns whether the queue may go on now. */
  async refused(entry, error) {
    this.outbox.mark(entry.key, "queued");
    if (error.code === "disconnected") return false;
    if (error.code === "rate_limited" || error.code === "unavailable" || error.code === "server_error") {
      const wait = error.detail?.retry_after ? error.detail.retry_after * 1000 : backoffDelay(2, this.options.backoff);
      await new Promise((resolve) => this.later(wait, resolve));
      return this.ready;
    }
    if (error.code === "not_subscribed") {
      const stream = this.streams.get(entry.topic);
      if (stream) {
        stream.live = false;
        this.subscribe(stream);
      }
      return this.ready;
    }
    if (error.code === "conflict" || FINAL_REFUSALS.has(error.code)) {
      const settled = await this.outbox.settle(entry.key, error.code === "conflict" ? "conflict" : "failed");
      this.emit("settled", { entry: settled, error });
      this.outboxChanged();
      return true;
    }
    return false;
  }

  // --- Liveness, quality, token ---------------------------------------------------------------

  heartbeat(intervalMs) {
    const socket = this.socket;
    this.later(intervalMs, () => {
      if (socket !== this.socket) return;
      // Hidden tabs' timers are throttled: their silence proves nothing about the network.
      const hidden = this.env.document?.visibilityState === "hidden";
      if (!hidden && Date.now() - this.lastHeard > intervalMs * 2.5) {
        this.abandon(3008, "heartbeat timeout");
        return;
      }
      const frame = { op: "heartbeat" };
      if (this.rtts.length) frame.rtt = Math.min(600000, Math.round(this.rtts.at(-1)));
      const sent = Date.now();
      this.request(frame).then(
        () => this.measured(Date.now() - sent),
        () => {},
      );
      this.heartbeat(intervalMs);
    });
  }

  measured(rtt) {
    this.rtts = [...this.rtts.slice(-2), rtt];
    this.qualityChanged();
  }

  /** Subscribes again when the connection crossed between poor and good (min_priority follows). */
  qualityChanged() {
    if (!this.ready) return;
    const poor = this.poorConnection();
    for (const stream of this.streams.values()) if ((stream.asked === "high") !== poor) this.subscribe(stream);
  }

  /** Poor: the median of the last three round trips is slow, or the browser says the network is. */
  poorConnection() {
    const network = this.env.navigator?.connection;
    if (network && (network.saveData || POOR_NETWORKS.has(network.effectiveType))) return true;
    if (this.rtts.length < 3) return false;
    return [...this.rtts].sort((a, b) => a - b)[1] > POOR_RTT_MS;
  }

  scheduleTokenRefresh() {
    if (!this.options.getToken) return;
    const socket = this.socket;
    // A minute before the token's `exp` (epoch seconds), and never sooner than in 5 s.
    const refreshBefore = (exp) => this.later(Math.max(5000, exp * 1000 - Date.now() - 60000), refresh);
    const refresh = async () => {
      if (socket !== this.socket) return;
      try {
        const token = await this.options.getToken();
        const data = await this.request({ op: "auth", token });
        refreshBefore(data.expires_at);
      } catch (error) {
        if (error.status === 401 || error.status === 403) this.stop(SESSION_ENDED);
        else if (socket === this.socket) this.later(5000, refresh);
      }
    };
    // Sockets opened with a token close at its `exp`: refresh a minute before it.
    this.options
      .getToken()
      .then((token) => refreshBefore(JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp))
      .catch(() => this.later(5000, refresh));
  }

  // --- The device -----------------------------------------------------------------------------

  watchDevice() {
    const { window, document, navigator } = this.env;
    const wake = () => {
      if (this.status === "stopped" || this.socket) return;
      this.attempt = 0;
      for (const timer of this.timers) clearTimeout(timer);
      this.timers.clear();
      this.connect();
    };
    window?.addEventListener("online", wake);
    window?.addEventListener("offline", () => {
      // Some phones never fire a close when the network goes: treat "offline" as one.
      this.abandon(3000, "offline");
      this.setStatus("offline");
    });
    document?.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") wake();
    });
    window?.addEventListener("pageshow", wake); // back from the back-forward cache
    navigator?.connection?.addEventListener?.("change", () => this.qualityChanged());
    if (this.options.reportBattery && navigator?.getBattery) {
      navigator
        .getBattery()
        .then((battery) => {
          this.battery = battery;
          const changed = () => {
            for (const topic of this.streams.keys()) this.sendBattery(topic);
          };
          battery.addEventListener("levelchange", changed);
          battery.addEventListener("chargingchange", changed);
          changed();
        })
        .catch(() => {});
    }
  }

  sendBattery(topic) {
    if (!this.battery || !this.socket) return;
    const state = { battery: Math.round(this.battery.level * 100), charging: this.battery.charging };
    this.setPresence(topic, state).catch(() => {});
  }

  // --- Plumbing -------------------------------------------------------------------------------

  /** Gives up on the socket now: over a dead network its close event may come much later. */
  abandon(code, reason) {
    const socket = this.socket;
    if (!socket) return;
    socket.close(code, reason);
    this.closed(socket, code);
  }

  send(frame) {
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(frame));
  }

  later(delay, action) {
    if (this.status === "stopped") return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      action();
    }, delay);
    this.timers.add(timer);
  }

  setStatus(status) {
    if (this.status === "stopped") return;
    this.status = status;
    this.emit("status", { status, queued: this.outbox.size, reason: this.stoppedReason });
  }

  outboxChanged() {
    this.emit("outbox", { entries: this.outbox.pending() });
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}
