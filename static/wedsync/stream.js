// Where a client stands in one wedding's event stream: the (epoch, seq) it resumes from and the
// events it has already handed on, so a replay that overlaps what arrived live is shown once.

/**
 * @typedef {object} StreamEvent
 * @property {number} seq
 * @property {boolean} [ahead] sent before older events of the topic (protocol: do not resume past it)
 * @property {boolean} [resent] the same emergency/critical frame again (re-alert; not a new event)
 * @property {boolean} [replay]
 */

export class TopicStream {
  /**
   * @param {string} topic e.g. "wedding:42"
   * @param {{seq?: number|null, epoch?: string|null}} [position] where a snapshot left off
   */
  constructor(topic, { seq = null, epoch = null } = {}) {
    this.topic = topic;
    /** @type {number|null} the highest seq delivered in order: the next subscribe's `since` */
    this.seq = seq;
    /** @type {string|null} */
    this.epoch = epoch;
    /** @type {Set<number>} seqs delivered ahead of their turn, above `seq` */
    this.ahead = new Set();
    /**
     * While a subscription asks for `min_priority: high`, lower events are not sent, so `seq`
     * must not move past them: every event counts as ahead of its turn until the next full
     * subscription replays what was skipped (and the set drops the copies).
     */
    this.filtered = false;
    /** @type {"low"|"high"} the min_priority of the newest subscribe sent */
    this.asked = "low";
    /** subscribed on the current socket: its queued ops may go out */
    this.live = false;
  }

  /**
   * Decides whether an event is new. "new" is handed on; "duplicate" is dropped; "resent" is an
   * unacknowledged alarm told again (re-alert the person, but it is no new event).
   * @param {StreamEvent} event
   * @returns {"new"|"duplicate"|"resent"}
   */
  accept(event) {
    const seen = (this.seq !== null && event.seq <= this.seq) || this.ahead.has(event.seq);
    if (event.resent) return "resent";
    if (event.ahead || this.filtered) {
      if (seen) return "duplicate";
      this.ahead.add(event.seq);
      return "new";
    }
    if (this.seq === null || event.seq > this.seq) this.seq = event.seq;
    for (const seq of this.ahead) if (seq <= this.seq) this.ahead.delete(seq);
    return seen ? "duplicate" : "new";
  }

  /** The position to send with `subscribe`. @returns {{since: number|null, epoch: string|null}} */
  resumeFrom() {
    return { since: this.seq, epoch: this.epoch };
  }

  /**
   * Takes in a `subscribe` reply. With `recovered: false` the position is useless: the caller must
   * reload the state and call {@link TopicStream#reset} with the snapshot's seq and epoch.
   * @param {{seq: number, epoch: string, recovered: boolean}} reply
   * @returns {boolean} whether the stream continues (false: reload)
   */
  subscribed(reply) {
    if (!reply.recovered) return false;
    this.epoch = reply.epoch;
    if (this.seq === null) this.seq = reply.seq;
    return true;
  }

  /** Starts again from a snapshot. @param {{seq: number, epoch: string}} snapshot */
  reset(snapshot) {
    this.seq = snapshot.seq;
    this.epoch = snapshot.epoch;
    this.ahead.clear();
  }
}
