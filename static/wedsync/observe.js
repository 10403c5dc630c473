// Staff observer pages (the board, a wedding's admin page; decision 0029): what they show is the
// server's own HTML, read again whenever the observer socket says a wedding changed (an event, a
// presence diff), at most once per short window, and every minute as the clock moves.

import { WedSyncClient } from "./client.js";
import { apiRequest } from "./ui.js";

const REFRESH_WINDOW_MS = 250;
const REFRESH_EVERY_MS = 60_000;

/** @param {string} topic */
const weddingOf = (topic) => Number(String(topic).split(":")[1]);

/**
 * Follows `weddings` over a staff observer socket; `load(wedding)` reads and shows one wedding's
 * part of the page and resolves with its `{seq, epoch}`.
 * @param {{weddings: number[], load: (wedding: number) => Promise<{seq: number, epoch: string}>,
 *   socket: string, ticket: string, csrfToken: string,
 *   onStatus: (detail: {status: string, reason?: string}) => void,
 *   onProblem: (message: string) => void, onEnded: (wedding: number) => void}} options
 */
export async function observeWeddings({ weddings, load, socket, ticket, csrfToken, onStatus, onProblem, onEnded }) {
  const due = new Map();
  const refreshSoon = (wedding) => {
    if (due.has(wedding) || !weddings.includes(wedding)) return;
    const timer = setTimeout(() => {
      due.delete(wedding);
      load(wedding).catch((error) => onProblem(`A wedding could not be refreshed (${error.message}); the next change tries again.`));
    }, REFRESH_WINDOW_MS);
    due.set(wedding, timer);
  };
  const client = new WedSyncClient({
    urls: [new URL(socket, location.href).href.replace(/^http/, "ws")],
    getTicket: async () => (await apiRequest("POST", ticket, { csrfToken })).ticket,
    loadState: load,
  });
  client.addEventListener("status", (e) => onStatus(e.detail));
  client.addEventListener("event", (e) => refreshSoon(weddingOf(e.detail.event.topic)));
  client.addEventListener("presence", (e) => refreshSoon(weddingOf(e.detail.topic)));
  client.addEventListener("unsubscribed", (e) => onEnded(weddingOf(e.detail.topic)));
  await client.start();
  for (const wedding of weddings) client.follow(wedding).catch((error) => onProblem(`A wedding could not be loaded: ${error.message}.`));
  setInterval(() => weddings.forEach(refreshSoon), REFRESH_EVERY_MS);
  return client;
}

/** The status line's words for the client's `status` event. @param {{status: string, reason?: string}} detail */
export function statusWords({ status, reason }) {
  const at = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (status === "online") return "Live: changes show as they happen.";
  if (status === "stopped") return `Live updates stopped: ${reason}. Reload the page to start again.`;
  if (status === "offline") return `Offline since ${at}: this shows what was known then.`;
  return status === "connecting" ? "Live updates are starting…" : `Reconnecting since ${at}…`;
}
