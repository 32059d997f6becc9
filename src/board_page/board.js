// The board page's script. Everything shown that came from the mailbox (and so, often, from
// a brother) goes into the page as text (textContent, never innerHTML): an agent's output
// containing markup stays text.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const POLL_MS = 2000;
const NAMES = { backlog: "Backlog", todo: "To do", in_progress: "In progress", needs_you: "Needs you", review: "Review", done: "Done" };
let openTask = null;
let dragging = false;
const drafts = new Map();

function api(path, body) {
  const url = path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  return fetch(url, opts).then(async (r) => {
    const data = await r.json().catch(() => ({ message: "HTTP " + r.status }));
    if (!r.ok) { const e = new Error(data.message || ("HTTP " + r.status)); e.code = data.error; e.status = r.status; throw e; }
    return data;
  });
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function say(text, info) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = info ? "info" : "";
  m.hidden = !text;
}

function money(x) { return x === null || x === undefined ? "" : "$" + Number(x).toFixed(2); }

function cardEl(card) {
  const c = el("div", "card");
  c.dataset.task = card.id;
  c.dataset.version = card.version;
  c.draggable = true;
  c.appendChild(el("div", "subject", "#" + card.id + " " + card.subject));
  const bits = [card.brother || "unassigned", card.status, card.priority];
  if (card.turns !== null && card.turns !== undefined) bits.push(card.turns + " turns");
  if (card.cost_usd !== null && card.cost_usd !== undefined) bits.push(money(card.cost_usd));
  c.appendChild(el("div", "meta", bits.join(" · ")));
  if (card.last_event) c.appendChild(el("div", "last", card.last_event));
  c.addEventListener("dragstart", (ev) => {
    dragging = true;
    ev.dataTransfer.setData("text/plain", JSON.stringify({ id: card.id, version: card.version }));
  });
  c.addEventListener("dragend", () => { dragging = false; });
  c.addEventListener("click", () => openPanel(card.id));
  return c;
}

function questionEl(q) {
  const c = el("div", "card question");
  c.dataset.questionTask = q.task;
  c.appendChild(el("div", "subject", "#" + q.task + " " + q.subject));
  c.appendChild(el("div", "meta", [q.brother, q.kind.replace("_", " "), Math.round(q.age_secs / 60) + " min ago"].join(" · ")));
  c.appendChild(el("div", "text", q.question));
  const box = el("textarea", "answer-text");
  box.placeholder = "Your answer";
  box.value = drafts.get(q.task) || "";
  box.addEventListener("input", () => drafts.set(q.task, box.value));
  box.addEventListener("click", (ev) => ev.stopPropagation());
  const send = el("button", "answer-send", "Answer");
  send.type = "button";
  send.addEventListener("click", (ev) => {
    ev.stopPropagation();
    send.disabled = true;
    api("/api/answer", { id: q.task, text: box.value })
      .then((r) => {
        drafts.delete(q.task);
        const how = r.answered.delivery === "said" ? "sent to the running agent" : "the agent resumed with it (run " + r.answered.run + ")";
        say("Answered task " + q.task + ": " + how + ".", true);
        refresh();
      })
      .catch((e) => { send.disabled = false; say("Not answered: " + e.message); });
  });
  c.appendChild(box);
  c.appendChild(send);
  c.addEventListener("click", () => openPanel(q.task));
  return c;
}

function moveCard(id, version, column, cardNode, target) {
  // Optimistic: the card moves at once; a refusal or a conflict puts the board back as the
  // mailbox has it and says why.
  target.appendChild(cardNode);
  api("/api/move", { id: id, column: column, version: version })
    .then(() => { say("Task " + id + " moved to " + (NAMES[column] || column) + ".", true); refresh(); })
    .catch((e) => {
      const why = e.code === "stale_version"
        ? "Conflict: " + e.message + " (the board now shows it as it is)"
        : "Not moved: " + e.message;
      say(why);
      refresh();
    });
}

function render(data) {
  document.getElementById("identity").textContent = "as " + data.identity;
  const s = data.sync;
  const syncText = s.error ? "sync failed: " + s.error : (s.last_at ? "synced " + s.last_at : "syncing…") + (s.warnings.length ? " (" + s.warnings.join("; ") + ")" : "");
  document.getElementById("sync").textContent = syncText;
  const board = document.getElementById("board");
  const focused = document.activeElement && document.activeElement.classList.contains("answer-text") ? document.activeElement.closest("[data-question-task]").dataset.questionTask : null;
  board.replaceChildren();
  for (const col of data.columns) {
    const c = el("section", "column");
    c.dataset.column = col.column;
    c.appendChild(el("h2", null, (NAMES[col.column] || col.column) + " (" + col.count + ")"));
    if (col.column === "needs_you") {
      const asked = new Set();
      for (const q of data.inbox) { asked.add(q.task); c.appendChild(questionEl(q)); }
      for (const card of col.cards) if (!asked.has(card.id)) c.appendChild(cardEl(card));
    } else {
      for (const card of col.cards) c.appendChild(cardEl(card));
    }
    c.addEventListener("dragover", (ev) => { ev.preventDefault(); c.classList.add("over"); });
    c.addEventListener("dragleave", () => c.classList.remove("over"));
    c.addEventListener("drop", (ev) => {
      ev.preventDefault();
      c.classList.remove("over");
      dragging = false;
      let d;
      try { d = JSON.parse(ev.dataTransfer.getData("text/plain")); } catch (_) { return; }
      const node = board.querySelector('.card[data-task="' + Number(d.id) + '"]');
      if (node) moveCard(d.id, d.version, col.column, node, c);
    });
    board.appendChild(c);
  }
  if (focused) {
    const box = board.querySelector('[data-question-task="' + Number(focused) + '"] .answer-text');
    if (box) box.focus();
  }
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

function openPanel(id) {
  openTask = id;
  document.getElementById("panel").hidden = false;
  loadPanel();
}

function loadPanel() {
  if (openTask === null) return;
  const id = openTask;
  api("/api/task/" + id)
    .then((t) => {
      if (openTask !== id) return;
      document.getElementById("panel-title").textContent = "#" + t.id + " " + t.subject;
      const meta = [t.brother, t.status, "version " + t.version];
      if (t.turns !== null) meta.push(t.turns + " turns");
      if (t.cost_usd !== null) meta.push(money(t.cost_usd));
      document.getElementById("panel-meta").textContent = meta.join(" · ");
      document.getElementById("panel-output").textContent = t.final_text || "(no output yet)";
      const list = document.getElementById("panel-thread");
      list.replaceChildren();
      for (const item of t.thread) {
        const who = item.author ? item.author + " " : "";
        list.appendChild(el("li", "item-" + item.kind, item.at + "  " + who + "(" + item.kind + "): " + item.text));
      }
    })
    .catch((e) => say("Could not load task " + id + ": " + e.message));
}

function refresh() {
  if (dragging) return Promise.resolve();
  return api("/api/board")
    .then((data) => { render(data); loadPanel(); })
    .catch((e) => say("Could not load the board: " + e.message));
}

document.getElementById("close").addEventListener("click", () => {
  openTask = null;
  document.getElementById("panel").hidden = true;
});
refresh();
setInterval(refresh, POLL_MS);
