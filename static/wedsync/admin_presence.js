// A wedding's admin page: its "Who is here now" table kept live over a staff observer socket
// (observe.js); the table is the server's HTML, read again when the wedding changes.

import { observeWeddings, statusWords } from "./observe.js";
import { apiRequest } from "./ui.js";

const holder = document.getElementById("live-presence");
const csrfToken = document.querySelector("[name=csrfmiddlewaretoken]")?.value ?? "";

if (holder) {
  const wedding = Number(holder.dataset.wedding);
  const table = holder.querySelector(".live-presence-table");
  const status = holder.querySelector(".live-presence-status");
  observeWeddings({
    weddings: [wedding],
    load: async () => {
      const fragment = await apiRequest("GET", holder.dataset.url, { csrfToken });
      table.innerHTML = fragment.html;
      return fragment;
    },
    socket: holder.dataset.socket,
    ticket: holder.dataset.ticket,
    csrfToken,
    onStatus: (detail) => {
      status.dataset.status = detail.status;
      status.textContent = statusWords(detail);
    },
    onProblem: (message) => (status.textContent = message),
    onEnded: () => (status.textContent = "Live updates ended: you no longer oversee this wedding."),
  });
}
