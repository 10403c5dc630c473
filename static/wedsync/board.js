// The coordinators' board in the admin (decision 0029): one card per wedding of today, each the
// server's HTML, read again when the observer socket says its wedding changed (observe.js).

import { observeWeddings, statusWords } from "./observe.js";
import { apiRequest } from "./ui.js";

const boot = JSON.parse(document.getElementById("board-boot").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const board = document.getElementById("board");
const statusLine = document.getElementById("board-status");

/** @param {number} wedding */
const cardUrl = (wedding) => boot.endpoints.card.replace("/0/", `/${wedding}/`);

function say(status, text) {
  statusLine.dataset.status = status;
  statusLine.textContent = text;
}

/** Puts a card's HTML in place, keeping focus on the same control where it still exists. */
function place(wedding, html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  const fresh = template.content.firstElementChild;
  const current = document.getElementById(`wedding-${wedding}`);
  const focused = current?.contains(document.activeElement) ? document.activeElement : null;
  const action = focused?.closest("form")?.getAttribute("action");
  if (current) current.replaceWith(fresh);
  else board.append(fresh);
  if (focused) (fresh.querySelector(`form[action="${CSS.escape(action ?? "")}"] button`) ?? fresh.querySelector("h2 a"))?.focus();
}

async function loadCard(wedding) {
  const card = await apiRequest("GET", cardUrl(wedding), { csrfToken });
  place(wedding, card.html);
  return card;
}

// Acknowledge and resolve in place: the form posts as it would without script; the answer is the card.
board.addEventListener("submit", async (e) => {
  const form = e.target.closest("form.board-action");
  if (!form) return;
  e.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
    });
    const payload = await response.json().catch(() => null);
    if (!response.ok || !payload) throw new Error(payload?.error?.message ?? `the server answered ${response.status}`);
    place(payload.wedding, payload.html);
  } catch (error) {
    button.disabled = false;
    say("problem", `That did not go through: ${error.message}.`);
  }
});

observeWeddings({
  weddings: boot.weddings,
  load: loadCard,
  socket: boot.endpoints.socket,
  ticket: boot.endpoints.ticket,
  csrfToken,
  onStatus: (detail) => say(detail.status, statusWords(detail)),
  onProblem: (message) => say("problem", message),
  onEnded: (wedding) => {
    const card = document.getElementById(`wedding-${wedding}`);
    card?.replaceWith(Object.assign(document.createElement("p"), { textContent: "A wedding left the board: you no longer oversee it." }));
  },
});
