// An in-process stand-in for a node's socket, driven frame by frame by a test: the client's
// timing and failure paths, deterministically. The real server is exercised by the browser tests.

export class FakeSocket {
  /** @type {FakeSocket[]} */
  static opened = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 1;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.opened.push(this);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedWith = code;
    setTimeout(() => this.onclose?.({ code }), 0);
  }

  /** The server sends a frame. */
  deliver(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The server answers the newest unanswered frame with `op`. */
  reply(op, data = {}, status = "ok") {
    const frame = this.sent.findLast((sent) => sent.op === op && !sent.answered);
    if (!frame) throw new Error(`no ${op} to answer; sent: ${JSON.stringify(this.sent)}`);
    frame.answered = true;
    this.deliver(status === "ok" ? { op: "reply", ref: frame.ref, status, data } : { op: "reply", ref: frame.ref, status, error: data });
    return frame;
  }

  /** The server's side drops the connection. */
  drop(code = 1006) {
    this.close(code);
  }
}

export const welcome = (interval = 30) => ({
  op: "welcome",
  session: "s1",
  user: { id: 3, name: "Ana" },
  memberships: [{ wedding: 1, member: 7, role: "planner" }],
  heartbeat_interval: interval,
  max_frame: 65536,
  server_time: new Date().toISOString(),
  node: "n1",
});

/** Waits until `predicate()` holds (or fails the test after a second). */
export async function until(predicate, what = "the condition") {
  const deadline = Date.now() + 1000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
