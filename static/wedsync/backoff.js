// Reconnect delays: exponential with "full jitter" (a uniformly random delay up to the exponential
// cap), so that a venue's phones, dropped together, do not all come back in the same instant.

/**
 * @typedef {object} BackoffOptions
 * @property {number} [baseMs] the first cap, in milliseconds (default 500)
 * @property {number} [capMs] the largest cap (default 20000)
 * @property {() => number} [random] a uniform random number in [0, 1) (default Math.random)
 */

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry).
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @returns {number} milliseconds, in [0, min(capMs, baseMs * 2 ** attempt))
 */
export function backoffDelay(attempt, { baseMs = 500, capMs = 20000, random = Math.random } = {}) {
  if (!Number.isInteger(attempt) || attempt < 0) throw new RangeError("attempt must be a whole number >= 0");
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * Which of `urls` attempt `attempt` goes to: the list in turn, so a dead node costs one attempt.
 * @param {string[]} urls
 * @param {number} attempt
 * @returns {string}
 */
export function urlForAttempt(urls, attempt) {
  if (urls.length === 0) throw new RangeError("no socket URL to connect to");
  return urls[attempt % urls.length];
}
