// The wedding-day page (web/templates/web/wedding_day.html): draws the wedding from the state
// snapshot and keeps it live through the client. Everything shown is text set through the DOM,
// never HTML built from data, and every failure is told in words.

import { WedSyncClient } from "./client.js";
import { openIndexedDbStorage } from "./idb.js";
import { MemoryStorage } from "./outbox.js";
import { apiRequest, el, formatTime, label, wallTimeToIso, wallTimeOf } from "./ui.js";

const boot = JSON.parse(document.getElementById("wedsync-boot").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const topic = `wedding:${boot.wedding.id}`;
const tz = boot.wedding.time_zone;
const may = (permission) => boot.may[permission] === "all";
const people = new Map(boot.members.map((m) => [m.id, m]));
const zoneLabel = new Map(boot.zones.map((z) => [z.value, z.label]));
const ackedKey = `wedsync-acked-${boot.me.member}`;

const view = {
  records: { timeline_item: new Map(), task: new Map(), rsvp: new Map() },
  feed: new Map(), // seq -> event
  emergencies: new Map(), // alert seq -> {message, location, from, repeats, resolved, seq}
  alerts: new Map(), // alert id -> newest alert.raised event
  vendorStatus: new Map(), // member -> vendor.status data with `at`
  presence: { online: {}, members: {} },
  pending: new Map(), // outbox key -> entry (for the badges)
  recordOps: new Map(), // "kind:id" -> status of the newest edit
  editing: null, // "kind:id" being edited
  drafts: {}, // form -> field -> what the person typed and has not saved
};

const acked = new Set(JSON.parse(localStorage.getItem(ackedKey) || "[]"));
const rememberAck = (seq) => {
  acked.add(seq);
  localStorage.setItem(ackedKey, JSON.stringify([...acked].slice(-200)));
};

// --- The client --------------------------------------------------------------------------------

const storage = await openIndexedDbStorage(`wedsync-outbox-${boot.me.member}`).catch(() => new MemoryStorage());
const client = new WedSyncClient({
  urls: [new URL(boot.endpoints.socket, location.href).href.replace(/^http/, "ws")],
  getTicket: async () => (await apiRequest("POST", boot.endpoints.ticket, { csrfToken })).ticket,
  loadState: () => apiRequest("GET", boot.endpoints.state, { csrfToken }),
  storage,
  reportBattery: true,
  affinity: String(boot.me.user),
});

client.addEventListener("status", () => drawConnection());
client.addEventListener("outbox", (e) => {
  view.pending = new Map(e.detail.entries.map((entry) => [entry.key, entry]));
  for (const entry of e.detail.entries) {
    if (entry.kind === "sync") view.recordOps.set(`${entry.frame.record}:${entry.frame.id}`, entry.status);
  }
  drawConnection();
  drawFeed();
  drawRecords();
});
client.addEventListener("settled", (e) => settled(e.detail));
client.addEventListener("snapshot", (e) => {
  for (const kind of Object.keys(view.records)) {
    view.records[kind] = new Map((e.detail.state.records[kind] || []).map((r) => [r.id, r]));
  }
  drawRecords();
});
client.addEventListener("event", (e) => received(e.detail.event, e.detail.resent));
client.addEventListener("presence", (e) => {
  if (e.detail.snapshot) view.presence = { online: e.detail.snapshot.online || {}, members: e.detail.snapshot.members || {} };
  if (e.detail.diff) {
    for (const part of ["joins", "updates"]) Object.assign(view.presence.members, e.detail.diff[part] || {});
    for (const member of Object.keys(e.detail.diff.leaves || {})) delete view.presence.members[member];
  }
  drawPresence();
});
client.addEventListener("unsubscribed", () => {
  notice("You no longer have access to this wedding. Reload the page to see your weddings.");
  client.stop("You no longer have access to this wedding.");
});
client.addEventListener("server-error", (e) => notice(e.detail.message));

// --- Events ------------------------------------------------------------------------------------

function received(event, resent) {
  const data = event.data || {};
  switch (event.type) {
    case "chat.message":
      view.feed.set(event.seq, event);
      return drawFeed();
    case "emergency.alert": {
      const alertSeq = data.alert_seq ?? event.seq;
      const known = view.emergencies.get(alertSeq);
      view.emergencies.set(alertSeq, {
        seq: alertSeq,
        message: data.message,
        location: data.location,
        from: event.from,
        repeats: data.repeat ?? 0,
        resolved: known?.resolved ?? null,
      });
      if (resent) acked.delete(alertSeq);
      view.feed.set(event.seq, event);
      drawEmergencies();
      return drawFeed();
    }
    case "emergency.resolved": {
      const open = view.emergencies.get(data.alert_seq) ?? { seq: data.alert_seq, message: data.message, from: null, repeats: 0 };
      view.emergencies.set(data.alert_seq, { ...open, resolved: { ...data, seq: event.seq } });
      view.feed.set(event.seq, event);
      drawEmergencies();
      return drawFeed();
    }
    case "alert.raised":
      view.alerts.set(data.alert, event);
      return drawAlerts();
    case "alert.resolved":
      view.alerts.delete(data.alert);
      return drawAlerts();
    case "vendor.status":
      view.vendorStatus.set(data.member ?? event.from?.member, { ...data, at: event.at, name: event.from?.name });
      return drawPresence();
    case "record.created":
    case "record.updated":
    case "conflict.resolved":
      keepNewer(data);
      return drawRecords();
    case "record.deleted":
      view.records[data.record]?.delete(data.id);
      return drawRecords();
    case "record.conflict":
      if (!event.replay) showConflict(data);
      return undefined;
    default:
      return undefined;
  }
}

/** Takes a record's values from an event or a reply unless the page already has a newer version. */
function keepNewer({ record, id, version, values }) {
  const records = view.records[record];
  const known = records?.get(id);
  if (records && (!known || known.version < version)) records.set(id, { id, version, values });
}

function settled({ entry, reply, error }) {
  if (entry.kind === "sync") {
    const key = `${entry.frame.record}:${entry.frame.id}`;
    view.recordOps.set(key, entry.status);
    if (reply?.values && reply.id) {
      keepNewer(reply);
      view.recordOps.set(`${reply.record}:${reply.id}`, entry.status);
    }
    drawRecords();
  }
  if (error) notice(`Not saved: ${error.message}`);
}

// --- Drawing -----------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function drawConnection() {
  const status = client.status;
  const queued = client.queued;
  const words = {
    idle: "Connecting…",
    connecting: "Connecting…",
    online: "Online",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    stopped: client.stoppedReason || "Disconnected",
  }[status];
  const box = $("connection");
  box.dataset.status = status;
  box.textContent = queued ? `${words} · ${queued} waiting to send` : words;
}

function notice(text) {
  const box = $("notices");
  box.replaceChildren(el("p", {}, text));
  setTimeout(() => box.firstChild?.textContent === text && box.replaceChildren(), 8000);
}

function drawFeed() {
  const list = $("feed-list");
  const items = [...view.feed.values()].sort((a, b) => a.seq - b.seq).slice(-200);
  const rows = items.map((event) => {
    const mine = event.from?.member === boot.me.member;
    const who = event.from?.name ?? "WedSync";
    if (event.type === "chat.message") {
      const kind = event.priority === "high" ? "announcement" : mine ? "mine" : "";
      return el("li", { class: kind, "data-seq": event.seq }, el("span", { class: "who" }, `${who}: `), el("span", { class: "text" }, event.data.text), el("time", {}, ` ${formatTime(event.at, tz)}`));
    }
    const text = event.type === "emergency.alert" ? `Emergency: ${event.data.message}` : `All clear: ${event.data.message}`;
    return el("li", { class: "announcement", "data-seq": event.seq }, el("span", { class: "who" }, `${who}: `), text);
  });
  for (const entry of view.pending.values()) {
    if (entry.kind !== "publish" || entry.frame.type !== "chat.message" || entry.topic !== topic) continue;
    const state = entry.status === "sent" ? "sending…" : "waiting to send";
    rows.push(el("li", { class: "mine pending", "data-status": entry.status }, el("span", { class: "who" }, "You: "), el("span", { class: "text" }, entry.frame.data.text), el("em", {}, ` (${state})`)));
  }
  list.replaceChildren(...rows);
  if (!rows.length) list.replaceChildren(el("li", { class: "empty" }, "No messages yet."));
}

function drawEmergencies() {
  const box = $("emergencies");
  const open = [...view.emergencies.values()].filter((e) => !acked.has(e.resolved ? e.resolved.seq : e.seq));
  box.replaceChildren(
    ...open.map((e) => {
      const ackSeq = e.resolved ? e.resolved.seq : e.seq;
      const where = e.location ? ` (${zoneLabel.get(e.location) ?? e.location})` : "";
      const title = e.resolved ? `All clear: ${e.message}` : `Emergency: ${e.message}${where}`;
      const by = e.resolved ? `Resolved by ${e.resolved.resolved_by?.name ?? "the planner"}` : `From ${e.from?.name ?? "a member"}${e.repeats ? `, sent ${e.repeats + 1} times` : ""}`;
      const button = el("button", { type: "button" }, "Acknowledge");
      button.addEventListener("click", () => {
        client.ack(topic, ackSeq);
        rememberAck(ackSeq);
        drawEmergencies();
      });
      return el("div", { class: e.resolved ? "banner resolved" : "banner", "data-alert-seq": e.seq }, el("strong", {}, title), el("p", {}, by), button);
    }),
  );
}

function drawAlerts() {
  const box = $("alerts");
  if (!box) return;
  box.replaceChildren(
    ...[...view.alerts.values()].map((event) => {
      const button = el("button", { type: "button" }, "Acknowledge");
      button.addEventListener("click", () => {
        client.ack(topic, event.seq);
        button.disabled = true;
        button.textContent = "Acknowledged";
      });
      return el("div", { class: `alert ${event.data.severity ?? ""}` }, el("strong", {}, event.data.message), " ", button);
    }),
  );
}

function recordBadge(kind, id) {
  const status = view.recordOps.get(`${kind}:${id}`);
  const words = { queued: "waiting to send", sent: "saving…", applied: "saved", conflict: "conflict", failed: "not saved" }[status];
  return words ? el("em", { class: `badge ${status}` }, ` (${words})`) : "";
}

function drawRecords() {
  // Redrawing must not cost a person what they are typing or where they are: drafts live in
  // view.drafts, and the focused field is focused again.
  const focused = document.activeElement?.id;
  drawTimeline();
  drawTasks();
  drawRsvp();
  if (focused && document.activeElement?.id !== focused) document.getElementById(focused)?.focus();
}

/** An input that keeps its draft across redraws. */
function draftInput(form, name, attributes, recordValue) {
  const drafts = (view.drafts[form] ??= {});
  const input = el("input", { ...attributes, name, value: drafts[name] ?? recordValue ?? "" });
  input.addEventListener("input", () => {
    drafts[name] = input.value;
  });
  return input;
}

function drawTimeline() {
  const items = [...view.records.timeline_item.values()].sort((a, b) => a.values.starts_at.localeCompare(b.values.starts_at));
  $("timeline-list").replaceChildren(
    ...items.map((item) => {
      const key = `timeline_item:${item.id}`;
      const where = item.values.location ? ` · ${zoneLabel.get(item.values.location) ?? item.values.location}` : "";
      const row = el("li", { "data-id": item.id }, el("time", {}, formatTime(item.values.starts_at, tz)), " ", el("span", { class: "title" }, item.values.title), where, recordBadge("timeline_item", item.id));
      if (may("edit_timeline")) {
        if (view.editing === key) row.append(timelineForm(item));
        else {
          const edit = el("button", { type: "button", class: "small", "aria-label": `Edit ${item.values.title}` }, "Edit");
          edit.addEventListener("click", () => {
            view.editing = key;
            drawTimeline();
            row.ownerDocument.getElementById(`edit-title-${item.id}`)?.focus();
          });
          row.append(" ", edit);
        }
      }
      return row;
    }),
  );
  if (!items.length) $("timeline-list").replaceChildren(el("li", { class: "empty" }, "Nothing on the timeline yet."));
}

function timelineForm(item) {
  const form_ = `timeline_item:${item.id}`;
  const title = draftInput(form_, "title", { id: `edit-title-${item.id}`, maxlength: "200", required: "" }, item.values.title);
  const time = draftInput(form_, "time", { id: `edit-time-${item.id}`, type: "time" }, wallTimeOf(item.values.starts_at, tz));
  const form = el(
    "form",
    { class: "edit" },
    el("label", { for: title.id }, "Title"),
    title,
    el("label", { for: time.id }, "Starts at"),
    time,
    el("button", {}, "Save"),
  );
  const cancel = el("button", { type: "button" }, "Cancel");
  cancel.addEventListener("click", () => {
    view.editing = null;
    delete view.drafts[form_];
    drawTimeline();
  });
  form.append(cancel);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const changes = {};
    if (title.value !== item.values.title) changes.title = title.value;
    const startsAt = wallTimeToIso(item.values.starts_at, time.value, tz);
    if (startsAt && wallTimeOf(item.values.starts_at, tz) !== time.value) changes.starts_at = startsAt;
    view.editing = null;
    delete view.drafts[form_];
    if (Object.keys(changes).length) client.sync({ topic, record: "timeline_item", id: item.id, baseVersion: item.version, changes });
    drawTimeline();
  });
  return form;
}

function drawTasks() {
  const tasks = [...view.records.task.values()].sort((a, b) => a.id - b.id);
  $("task-list").replaceChildren(
    ...tasks.map((task) => {
      const assignee = people.get(task.values.assignee)?.name ?? "nobody";
      const mayChange = may("manage_members") || task.values.assignee === boot.me.member;
      const row = el("li", { "data-id": task.id }, el("span", { class: "title" }, task.values.title), ` · ${assignee}`);
      if (mayChange) {
        const select = el("select", { "aria-label": `Status of ${task.values.title}` });
        for (const status of ["todo", "in_progress", "done", "blocked"]) select.append(el("option", { value: status, ...(status === task.values.status ? { selected: "" } : {}) }, label(status)));
        select.addEventListener("change", () => client.sync({ topic, record: "task", id: task.id, baseVersion: task.version, changes: { status: select.value } }));
        row.append(" ", select);
      } else row.append(` · ${label(task.values.status)}`);
      row.append(recordBadge("task", task.id));
      return row;
    }),
  );
  if (!tasks.length) $("task-list").replaceChildren(el("li", { class: "empty" }, "No tasks."));
}

function drawRsvp() {
  const body = $("rsvp-body");
  const rsvps = [...view.records.rsvp.values()];
  if (boot.me.role === "guest") {
    const mine = rsvps.find((r) => r.values.guest === boot.me.member);
    return body.replaceChildren(rsvpForm(mine));
  }
  const counts = {};
  for (const r of rsvps) counts[r.values.status] = (counts[r.values.status] || 0) + 1;
  const summary = Object.entries(counts).map(([status, n]) => `${n} ${label(status).toLowerCase()}`).join(", ") || "No answers yet.";
  const list = el("ul", {}, ...rsvps.map((r) => el("li", {}, `${people.get(r.values.guest)?.name ?? `Guest ${r.values.guest}`}: ${label(r.values.status)}${r.values.plus_ones ? ` +${r.values.plus_ones}` : ""}`, recordBadge("rsvp", r.id))));
  body.replaceChildren(el("p", {}, summary), list);
}

function rsvpForm(mine) {
  const values = mine?.values ?? { status: "pending", meal: "", plus_ones: 0, dietary_notes: "" };
  const chosen = view.drafts.rsvp?.status ?? values.status;
  const status = el("select", { id: "rsvp-status", name: "status" }, ...["pending", "attending", "declined", "maybe"].map((s) => el("option", { value: s, ...(s === chosen ? { selected: "" } : {}) }, label(s))));
  status.addEventListener("change", () => {
    (view.drafts.rsvp ??= {}).status = status.value;
  });
  const meal = draftInput("rsvp", "meal", { id: "rsvp-meal", maxlength: "100" }, values.meal);
  const plus = draftInput("rsvp", "plus_ones", { id: "rsvp-plus", type: "number", min: "0", max: "20" }, String(values.plus_ones ?? 0));
  const notes = draftInput("rsvp", "dietary_notes", { id: "rsvp-notes" }, values.dietary_notes);
  const form = el("form", { class: "edit" }, el("label", { for: "rsvp-status" }, "Coming?"), status, el("label", { for: "rsvp-meal" }, "Meal"), meal, el("label", { for: "rsvp-plus" }, "Plus-ones"), plus, el("label", { for: "rsvp-notes" }, "Dietary notes"), notes, el("button", {}, "Save my RSVP"), mine ? recordBadge("rsvp", mine.id) : "");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const changes = { status: status.value, meal: meal.value, plus_ones: Number(plus.value) || 0, dietary_notes: notes.value };
    delete view.drafts.rsvp;
    client.sync({ topic, record: "rsvp", id: mine?.id ?? null, baseVersion: mine?.version ?? null, changes });
  });
  return form;
}

function drawPresence() {
  const body = $("presence-body");
  // Those who see everyone count from the members they are told about as they change; guests get
  // the counts alone, refreshed from the presence endpoint.
  let online = view.presence.online || {};
  if (may("view_presence")) {
    online = {};
    for (const state of Object.values(view.presence.members || {})) {
      if (state.status !== "offline") online[state.role] = (online[state.role] || 0) + 1;
    }
  }
  const counts = Object.entries(online).map(([role, n]) => `${n} ${label(role).toLowerCase()}${n === 1 ? "" : "s"}`);
  const parts = [el("p", { id: "presence-counts" }, counts.length ? `Online: ${counts.join(", ")}` : "Nobody online yet.")];
  if (may("view_presence")) {
    const byZone = new Map();
    for (const [member, state] of Object.entries(view.presence.members || {})) {
      const zone = state.location ? zoneLabel.get(state.location) ?? state.location : "Location not shared";
      if (!byZone.has(zone)) byZone.set(zone, []);
      byZone.get(zone).push([member, state]);
    }
    for (const [zone, members] of [...byZone.entries()].sort()) {
      parts.push(
        el("h3", {}, zone),
        el(
          "ul",
          { class: "people" },
          ...members.map(([member, state]) => {
            const person = people.get(Number(member));
            const battery = state.battery == null ? "" : ` · battery ${state.battery}%${state.charging ? " (charging)" : ""}`;
            const quality = state.connection?.quality ? ` · connection ${state.connection.quality}` : "";
            const activity = state.activity ? ` · ${label(state.activity)}` : "";
            return el("li", { "data-member": member }, `${person?.name ?? `Member ${member}`} (${label(state.role ?? person?.role ?? "")}), ${state.status}${activity}${battery}${quality}`);
          }),
        ),
      );
    }
  }
  if ((boot.me.role === "planner" || boot.me.role === "couple") && view.vendorStatus.size) {
    parts.push(
      el("h3", {}, "Vendors"),
      el("ul", { id: "vendor-statuses" }, ...[...view.vendorStatus.entries()].map(([member, s]) => el("li", {}, `${people.get(member)?.name ?? s.name}: ${label(s.activity)}${s.eta_minutes != null ? `, ETA ${s.eta_minutes} min` : ""}`))),
    );
  }
  body.replaceChildren(...parts);
}

// --- Conflicts ---------------------------------------------------------------------------------

function showConflict(data) {
  const dialog = $("conflict-dialog");
  const record = view.records[data.record]?.get(data.id);
  const name = record?.values.title ?? `${label(data.record)} ${data.id}`;
  const reasons = {
    overridden: "Your change lost to someone else's.",
    overwritten: "Someone changed what you had set.",
    conflict: "Two changes clash; a planner will decide.",
  };
  $("conflict-title").textContent = `${name}: ${reasons[data.reason] ?? "Changed by someone else."}`;
  const rows = (data.fields || []).map((field) => el("tr", {}, el("th", { scope: "row" }, label(field)), el("td", {}, show(data.yours?.[field])), el("td", {}, show(data.current?.[field]))));
  $("conflict-rows").replaceChildren(...rows);
  const retry = $("conflict-mine");
  retry.hidden = !(data.reason === "overridden" && data.yours && record);
  retry.onclick = () => {
    client.sync({ topic, record: data.record, id: data.id, baseVersion: view.records[data.record].get(data.id).version, changes: data.yours });
    dialog.close();
  };
  if (!dialog.open) dialog.showModal();
}

const show = (value) => (value == null ? "—" : typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value) ? formatTime(value, tz) : String(value));

// --- Forms -------------------------------------------------------------------------------------

$("chat-form")?.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("chat-text").value.trim();
  if (!text) return;
  const announce = $("chat-announce")?.checked;
  client.publish({ topic, type: "chat.message", data: { text }, priority: announce ? "high" : undefined });
  $("chat-text").value = "";
  if (announce) $("chat-announce").checked = false;
});

$("emergency-form")?.addEventListener("submit", (e) => {
  e.preventDefault();
  const message = $("emergency-message").value.trim();
  if (!message) return;
  const data = { message };
  if ($("emergency-location").value) data.location = $("emergency-location").value;
  client.publish({ topic, type: "emergency.alert", data });
  $("emergency-message").value = "";
});

for (const button of document.querySelectorAll("[data-activity]")) {
  button.addEventListener("click", () => {
    const data = { activity: button.dataset.activity };
    const eta = Number($("status-eta").value);
    if ($("status-eta").value !== "" && Number.isInteger(eta) && eta >= 0) data.eta_minutes = eta;
    client.publish({ topic, type: "vendor.status", data });
    client.setPresence(topic, { activity: button.dataset.activity }).catch(() => {});
    $("status-current").textContent = `Your status: ${label(button.dataset.activity)}`;
  });
}

$("location-form")?.addEventListener("change", () => {
  const value = $("my-location").value;
  client.setPresence(topic, { location: value || null }).catch((error) => notice(`Location not shared: ${error.message}`));
});

$("conflict-close")?.addEventListener("click", () => $("conflict-dialog").close());

// --- Start -------------------------------------------------------------------------------------

async function seedEmergencies() {
  try {
    const { emergencies } = await apiRequest("GET", `${boot.endpoints.emergencies}?state=open`, { csrfToken });
    for (const e of emergencies) {
      if (!view.emergencies.has(e.alert_seq)) view.emergencies.set(e.alert_seq, { seq: e.alert_seq, message: e.message, location: e.location, from: e.raised_by, repeats: e.repeats, resolved: null });
    }
    drawEmergencies();
  } catch {
    // The socket's re-sends bring an unacknowledged alarm within a minute anyway.
  }
}

async function refreshCounts() {
  // Guests get no presence diffs: their counts come from the presence endpoint now and then.
  try {
    const snapshot = await apiRequest("GET", boot.endpoints.presence, { csrfToken });
    view.presence.online = snapshot.online || {};
    drawPresence();
  } catch {
    // Shown again at the next refresh.
  }
}

drawConnection();
drawFeed();
await client.start();
await client.follow(boot.wedding.id, { history: 200 }).catch((error) => notice(`Could not load the wedding: ${error.message}`));
seedEmergencies();
if (!may("view_presence")) setInterval(refreshCounts, 30000);
