// Small helpers of the pages: DOM building (text only, never HTML from data), the API's JSON
// calls with their errors in words, and times in the wedding's own time zone.

/**
 * @param {string} tag
 * @param {Record<string, string>} attributes
 * @param {...(Node|string)} children
 * @returns {HTMLElement}
 */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) if (value !== undefined && value !== null) node.setAttribute(name, value);
  for (const child of children) if (child !== "" && child != null) node.append(child);
  return node;
}

/** An API refusal, with the server's code and message (and `status` for the client's auth checks). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * A same-origin JSON call with the session cookie and the CSRF token.
 * @param {string} method
 * @param {string} url
 * @param {{csrfToken: string, body?: unknown}} options
 */
export async function apiRequest(method, url, { csrfToken, body }) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "unavailable", "The server could not be reached.");
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = payload?.error ?? {};
    throw new ApiError(response.status, error.code ?? "server_error", error.message ?? `The server answered ${response.status}.`);
  }
  return payload;
}

/** "in_progress" -> "In progress". @param {string} word */
export function label(word) {
  if (!word) return "";
  const text = String(word).replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** 14:30 in the wedding's time zone. @param {string} iso @param {string} timeZone */
export function formatTime(iso, timeZone) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", timeZone }).format(new Date(iso));
}

/** The parts of an instant on the wall clock of `timeZone`. */
function wallParts(date, timeZone) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  }).formatToParts(date);
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  return { year: get("year"), month: get("month"), day: get("day"), hour: get("hour"), minute: get("minute"), second: get("second") };
}

/** "HH:MM" of an instant in `timeZone` (for a time input). */
export function wallTimeOf(iso, timeZone) {
  const p = wallParts(new Date(iso), timeZone);
  return `${String(p.hour).padStart(2, "0")}:${String(p.minute).padStart(2, "0")}`;
}

/**
 * The instant at wall time `hhmm` on the same local day as `iso`, in `timeZone`, as ISO 8601 UTC.
 * @returns {string|null} null when `hhmm` is not a time
 */
export function wallTimeToIso(iso, hhmm, timeZone) {
  const match = /^(\d\d):(\d\d)$/.exec(hhmm ?? "");
  if (!match) return null;
  const day = wallParts(new Date(iso), timeZone);
  const wanted = Date.UTC(day.year, day.month - 1, day.day, Number(match[1]), Number(match[2]));
  // The zone's offset at that moment, found from a first guess and checked once (DST edges).
  let guess = wanted;
  for (let i = 0; i < 2; i++) {
    const p = wallParts(new Date(guess), timeZone);
    const shown = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
    guess += wanted - shown;
  }
  return new Date(guess).toISOString();
}
