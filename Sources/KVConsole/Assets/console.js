// kvconnectd console. Plain JavaScript, no build step, no other host: it
// talks only to the JSON API beside it (/console/api/...). The session is an
// HttpOnly cookie; the CSRF token lives in memory and goes with every change.
"use strict";

const $ = (id) => document.getElementById(id);
const api = "api/";
const state = { csrf: null, databases: [], db: null, readOnly: false, tab: "data",
                prefix: "", cursor: null, key: null, entry: null, dirty: false, events: null, serverTimer: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

async function call(path, params, body) {
  const url = new URL(api + path, location.href);
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined) url.searchParams.set(k, v);
  const init = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    if (state.csrf) init.headers["x-csrf-token"] = state.csrf;
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url, init);
  const type = r.headers.get("content-type") || "";
  const data = type.startsWith("application/json") ? await r.json() : await r.text();
  if (!r.ok) {
    if (r.status === 401 && path !== "signin") showSignIn();
    throw new ApiError(r.status, typeof data === "string" ? data.trim() : (data.message || r.statusText), data);
  }
  return data;
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = kind || "";
}

// ---- sign-in ----

function showSignIn() {
  stopLive();
  stopServer();
  state.csrf = null;
  for (const v of ["view-data", "view-queue", "view-server"]) $(v).hidden = true;
  $("nav").hidden = true;
  $("view-signin").hidden = false;
  $("token").focus();
}

function startSession(s) {
  state.csrf = s.csrfToken;
  state.databases = s.databases;
  const sel = $("db-select");
  sel.replaceChildren(...s.databases.map((d) => el("option", { value: d.name }, d.name + (d.readOnly ? " (read-only)" : ""))));
  const fromHash = readHash();
  state.db = s.databases.some((d) => d.name === fromHash.db) ? fromHash.db : s.databases[0].name;
  sel.value = state.db;
  state.prefix = fromHash.prefix || "";
  state.key = fromHash.key || null;
  state.tab = fromHash.tab || "data";
  applyScope();
  $("view-signin").hidden = true;
  $("nav").hidden = false;
  $("token").value = "";
  showTab(state.tab);
}

function applyScope() {
  const d = state.databases.find((x) => x.name === state.db);
  state.readOnly = !d || d.readOnly;
  document.body.classList.toggle("read-only", state.readOnly);
  $("ro-badge").hidden = !state.readOnly;
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  $("signin").disabled = true;
  try {
    startSession(await call("signin", null, { token: $("token").value }));
  } catch (e) {
    $("signin-error").textContent = e.message;
  } finally {
    $("signin").disabled = false;
  }
});

$("signout").addEventListener("click", async () => {
  try { await call("signout", null, {}); } catch { /* already signed out */ }
  location.hash = "";
  showSignIn();
});

$("db-select").addEventListener("change", () => {
  state.db = $("db-select").value;
  state.prefix = ""; state.key = null;
  applyScope();
  showTab(state.tab);
});

for (const b of document.querySelectorAll("button.tab")) b.addEventListener("click", () => showTab(b.dataset.tab));

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("button.tab")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const t of ["data", "queue", "server"]) $("view-" + t).hidden = t !== tab;
  if (!state.key) $("entry-panel").hidden = true;
  stopServer();
  say("");
  if (tab !== "data") stopLive();
  writeHash();
  if (tab === "data") loadList(true);
  if (tab === "queue") loadQueue();
  if (tab === "server") { loadServer(); state.serverTimer = setInterval(loadServer, 2000); }
}

// ---- location hash: #tab=data&db=default&prefix=...&key=... ----

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { tab: p.get("tab"), db: p.get("db"), prefix: p.get("prefix"), key: p.get("key") };
}

function writeHash() {
  const p = new URLSearchParams({ tab: state.tab, db: state.db || "" });
  if (state.prefix) p.set("prefix", state.prefix);
  if (state.key) p.set("key", state.key);
  history.replaceState(null, "", "#" + p.toString());
}

// ---- data browser ----

function keyCell(key) {
  const cell = el("td", { class: "key" });
  if (!key.parts.length) { cell.append(key.text); return cell; }
  cell.append("[ ");
  key.parts.forEach((p, i) => {
    if (i) cell.append(", ");
    const a = el("a", { href: "#", title: p.type + " — show keys under this prefix", "data-prefix": p.prefix }, p.text);
    a.addEventListener("click", (ev) => { ev.preventDefault(); ev.stopPropagation(); goPrefix(p.prefix); });
    cell.append(a, el("span", { class: "part-type" }, p.type));
  });
  cell.append(" ]");
  return cell;
}

function goPrefix(prefix) {
  state.prefix = prefix; state.key = null;
  $("entry-panel").hidden = true;
  say("");
  writeHash();
  loadList(true);
}

function renderBreadcrumbs(prefix) {
  const bc = $("breadcrumbs");
  const root = el("a", { href: "#", "data-prefix": "" }, "all keys");
  root.addEventListener("click", (ev) => { ev.preventDefault(); goPrefix(""); });
  bc.replaceChildren(root);
  for (const p of prefix.parts) {
    const a = el("a", { href: "#", "data-prefix": p.prefix, title: p.type }, p.text);
    a.addEventListener("click", (ev) => { ev.preventDefault(); goPrefix(p.prefix); });
    bc.append(el("span", { class: "sep" }, "›"), a);
  }
}

// Answers can arrive out of order (a slow first listing after a quick
// navigation): only the answer to the latest request is shown.
let listSeq = 0;
async function loadList(reset) {
  if (reset) { state.cursor = null; $("entries").tBodies[0].replaceChildren(); $("confirm-panel").hidden = true; }
  const seq = ++listSeq;
  let page;
  try {
    page = await call("list", { db: state.db, prefix: state.prefix, cursor: state.cursor });
  } catch (e) { if (seq === listSeq) say(e.message, "error"); return; }
  if (seq !== listSeq) return;
  renderBreadcrumbs(page.prefix);
  const body = $("entries").tBodies[0];
  if (reset) body.replaceChildren();
  for (const e of page.entries) {
    const tr = el("tr", { "data-key": e.key.id }, keyCell(e.key), el("td", { class: "type" }, e.type), el("td", { class: "val" }, e.text));
    if (e.key.id === state.key) tr.classList.add("selected");
    tr.addEventListener("click", () => openEntry(e.key.id));
    body.append(tr);
  }
  $("empty").hidden = body.rows.length > 0;
  state.cursor = page.cursor;
  $("load-more").hidden = !page.cursor;
  if (reset) {
    startLive();
    // Restores the entry named in the location; the panel is otherwise left
    // alone (the user may have opened "New key" while the list loaded).
    if (state.key) openEntry(state.key);
  }
}

$("load-more").addEventListener("click", () => loadList(false));

async function openEntry(id) {
  state.key = id;
  writeHash();
  for (const tr of $("entries").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.key === id);
  let r;
  try { r = await call("entry", { db: state.db, key: id }); } catch (e) { say(e.message, "error"); return; }
  state.dirty = false;
  showEntry(r.key, r.entry, true);
  startLive();
}

function showEntry(key, entry, resetEditor) {
  $("entry-panel").hidden = false;
  $("entry-key").textContent = key.text;
  $("editor-key-label").hidden = true;
  $("editor-title").textContent = "Edit";
  $("delete").hidden = !entry;
  $("entry-notice").textContent = "";
  if (!entry) {
    $("entry-type").textContent = "—"; $("entry-versionstamp").textContent = "—"; $("entry-size").textContent = "—";
    $("entry-text").textContent = "(no such key: it was deleted or has expired)";
    $("raw").textContent = "";
  } else {
    $("entry-type").textContent = entry.type;
    $("entry-versionstamp").textContent = entry.versionstamp;
    $("entry-size").textContent = entry.size + " bytes";
    $("entry-text").textContent = entry.text;
    $("raw").textContent = "encoding: " + entry.raw.encoding + "\n" + entry.raw.hex.replace(/(..)/g, "$1 ").trim();
  }
  if (resetEditor) {
    state.entry = { key, entry };
    const ed = entry && entry.editor;
    $("editor-type").value = ed ? ed.type : "json";
    $("editor-value").value = ed ? ed.value : "";
    if (entry && !ed) $("entry-notice").textContent = "This " + entry.type + " has no editable form here: saving replaces it with the value you type.";
    state.dirty = false;
  } else if (state.dirty && entry && state.entry.entry && entry.versionstamp !== state.entry.entry.versionstamp) {
    $("entry-notice").textContent = "This key changed on the server while you edit; saving will report the conflict.";
  }
}

$("editor-value").addEventListener("input", () => { state.dirty = true; });
$("editor-type").addEventListener("change", () => { state.dirty = true; });

$("new-key").addEventListener("click", () => {
  state.key = null;
  state.entry = { key: null, entry: null };
  $("entry-panel").hidden = false;
  $("entry-key").textContent = "New key";
  for (const f of ["entry-type", "entry-versionstamp", "entry-size"]) $(f).textContent = "—";
  $("entry-text").textContent = "";
  $("raw").textContent = "";
  $("entry-notice").textContent = "";
  $("delete").hidden = true;
  $("editor-title").textContent = "New key";
  $("editor-key-label").hidden = false;
  const crumbs = [...$("breadcrumbs").querySelectorAll("a")].slice(1).map((a) => a.textContent);
  $("editor-key").value = "[" + crumbs.map((t) => t.startsWith("\"") ? t : JSON.stringify(t)).join(", ") + (crumbs.length ? ", " : "") + "]";
  $("editor-type").value = "string";
  $("editor-value").value = "";
  $("editor-key").focus();
});

$("editor").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const isNew = !state.entry || !state.entry.key;
  const body = { db: state.db, type: $("editor-type").value, value: $("editor-value").value };
  if (isNew) { body.keyJson = $("editor-key").value; body.expect = null; }
  else { body.key = state.entry.key.id; body.expect = state.entry.entry ? state.entry.entry.versionstamp : null; }
  try {
    const r = await call("set", null, body);
    say("Saved (versionstamp " + r.versionstamp + ").", "ok");
    state.key = r.key;
    await loadList(true);
  } catch (e) {
    if (e.status === 409 && e.body && e.body.conflict) {
      const now = e.body.entry;
      say("Not saved: " + e.body.message + (now ? ". Now: " + now.text : "") + ". Review and save again.", "conflict");
      if (!isNew) showEntry(state.entry.key, now, true);
    } else {
      say(e.message, "error");
    }
  }
});

$("delete").addEventListener("click", async () => {
  if (!state.entry || !state.entry.entry) return;
  try {
    await call("delete", null, { db: state.db, key: state.entry.key.id, expect: state.entry.entry.versionstamp });
    say("Deleted " + state.entry.key.text + ".", "ok");
    state.key = null;
    $("entry-panel").hidden = true;
    loadList(true);
  } catch (e) {
    if (e.status === 409 && e.body && e.body.conflict) {
      say("Not deleted: " + e.body.message + (e.body.entry ? ". Now: " + e.body.entry.text : "") + ".", "conflict");
      showEntry(state.entry.key, e.body.entry, true);
    } else say(e.message, "error");
  }
});

let pendingPrefixCount = null;
$("delete-prefix").addEventListener("click", async () => {
  try {
    const r = await call("count", { db: state.db, prefix: state.prefix });
    if (r.tooMany) { say("Too many keys under this prefix to delete at once: choose a narrower prefix.", "error"); return; }
    pendingPrefixCount = r.count;
    const where = $("breadcrumbs").textContent.replace(/^all keys›?/, "").replace(/›/g, ", ");
    $("confirm-text").textContent = "Delete " + r.count + " key" + (r.count === 1 ? "" : "s") + " under " + (state.prefix ? "[ " + where + " ]" : "the whole database") + "?";
    $("confirm-delete-prefix").textContent = "Delete " + r.count + " key" + (r.count === 1 ? "" : "s");
    $("confirm-panel").hidden = false;
  } catch (e) { say(e.message, "error"); }
});

$("cancel-delete-prefix").addEventListener("click", () => { $("confirm-panel").hidden = true; });

$("confirm-delete-prefix").addEventListener("click", async () => {
  $("confirm-panel").hidden = true;
  try {
    const r = await call("delete-prefix", null, { db: state.db, prefix: state.prefix, count: pendingPrefixCount });
    say("Deleted " + r.deleted + " key" + (r.deleted === 1 ? "" : "s") + ".", "ok");
    state.key = null;
    $("entry-panel").hidden = true;
    loadList(true);
  } catch (e) {
    say(e.status === 409 && e.body ? e.body.message : e.message, e.status === 409 ? "conflict" : "error");
  }
});

// ---- live view (server-sent events) ----

function startLive() {
  stopLive();
  const url = new URL(api + "events", location.href);
  url.searchParams.set("db", state.db);
  url.searchParams.set("prefix", state.prefix);
  const es = new EventSource(url);
  state.events = es;
  es.addEventListener("ready", () => $("live-status").classList.add("on"));
  es.addEventListener("error", () => $("live-status").classList.remove("on"));
  es.addEventListener("change", () => refreshLive());
  if (state.key) {
    const k = new URL(api + "events", location.href);
    k.searchParams.set("db", state.db);
    k.searchParams.set("key", state.key);
    const ek = new EventSource(k);
    ek.addEventListener("change", () => refreshLive());
    state.keyEvents = ek;
  }
}

function stopLive() {
  if (state.events) { state.events.close(); state.events = null; }
  if (state.keyEvents) { state.keyEvents.close(); state.keyEvents = null; }
  $("live-status").classList.remove("on");
}

let refreshing = null;
function refreshLive() {
  if (refreshing) return;
  refreshing = (async () => {
    try {
      const body = $("entries").tBodies[0];
      // As many rows as are loaded now: a live update does not fold pages back.
      const limit = Math.min(500, Math.max(50, body.rows.length));
      const seq = ++listSeq;
      const page = await call("list", { db: state.db, prefix: state.prefix, limit });
      if (seq !== listSeq) return;
      body.replaceChildren();
      for (const e of page.entries) {
        const tr = el("tr", { "data-key": e.key.id }, keyCell(e.key), el("td", { class: "type" }, e.type), el("td", { class: "val" }, e.text));
        if (e.key.id === state.key) tr.classList.add("selected");
        tr.addEventListener("click", () => openEntry(e.key.id));
        body.append(tr);
      }
      $("empty").hidden = body.rows.length > 0;
      state.cursor = page.cursor;
      $("load-more").hidden = !page.cursor;
      if (state.key && state.entry && state.entry.key) {
        const r = await call("entry", { db: state.db, key: state.key });
        showEntry(r.key, r.entry, !state.dirty);
      }
    } catch {
      /* shown on the next action */
    } finally {
      refreshing = null;
    }
  })();
}

// ---- queue ----

function kvRows(table, rows) {
  table.replaceChildren(...rows.map(([k, v, id]) => el("tr", {}, el("th", {}, k), el("td", id ? { id } : {}, v))));
}

async function loadQueue() {
  try {
    const q = await call("queue", { db: state.db });
    kvRows($("queue-counts"), [
      ["Ready (waiting or due)", q.ready, "queue-ready"], ["In flight (leased)", q.inflight, "queue-inflight"],
      ["Acknowledged since start", q.acknowledged], ["Failed attempts since start", q.failedAttempts],
      ["Dead-lettered since start", q.deadLettered, "queue-dead"], ["Expired leases since start", q.leasesExpired],
      ["Made ready again on open", q.recoveredOnOpen],
    ]);
  } catch (e) { kvRows($("queue-counts"), [["Error", e.message]]); }
}

// ---- server ----

function stopServer() { if (state.serverTimer) { clearInterval(state.serverTimer); state.serverTimer = null; } }

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}

function chart(svg, samples, field) {
  const ns = "http://www.w3.org/2000/svg", W = 300, H = 80, left = 30;
  const vals = samples.map((s) => s[field]);
  const max = Math.max(1e-9, ...vals.filter((v) => v !== null));
  const nice = max >= 10 ? Math.ceil(max) : Number(max.toPrecision(2));
  const n = Math.max(samples.length, 2);
  const x = (i) => left + (W - left) * (i + (300 - n)) / 299;
  const y = (v) => H - 2 - (H - 12) * v / nice;
  const parts = [];
  // A point without a neighbour still shows (a round-capped zero-length segment).
  vals.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const joined = parts.length && vals[i - 1] !== null && vals[i - 1] !== undefined;
    parts.push((joined ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1) + (joined ? "" : " h0.01"));
  });
  const mk = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; };
  svg.replaceChildren(
    mk("line", { class: "axis", x1: left, y1: H - 2, x2: W, y2: H - 2 }),
    mk("line", { class: "axis", x1: left, y1: 10, x2: W, y2: 10 }),
    mk("text", { x: 0, y: 13 }, String(nice)), mk("text", { x: 0, y: H - 2 }, "0"),
    mk("text", { x: W - 40, y: H + 8 }, "now"), mk("text", { x: left, y: H + 8 }, "−5 min"),
    mk("path", { class: "line", d: parts.join(" ") }));
  svg.setAttribute("viewBox", "0 0 300 90");
}

async function loadServer() {
  try {
    const s = await call("server", { db: state.db });
    const last = (s.samples || []).slice(-1)[0] || {};
    kvRows($("server-info"), [
      ["Version", s.version || "—", "server-version"], ["Uptime", duration(s.uptimeSeconds)],
      ["Database", s.database.name + " (" + s.database.id + ")"], ["Location", s.database.location],
      ["Size", bytes(s.database.sizeBytes), "server-size"], ["Keys", s.database.entries ?? "—", "server-keys"],
      ["Latest versionstamp", s.database.versionstamp],
      ["Open connections", s.openConnections ?? "—", "server-connections"],
      ["Open streams (watches, console live views)", s.openStreams ?? "—"], ["Watch registrations", s.database.watches],
      ["Requests per second (last)", last.rps ?? "—"], ["Writes per second (last)", last.wps ?? "—"],
    ]);
    const samples = s.samples || [];
    chart($("chart-rps"), samples, "rps");
    chart($("chart-req-ms"), samples, "reqMs");
    chart($("chart-wps"), samples, "wps");
    chart($("chart-commit-ms"), samples, "commitMs");
  } catch (e) { kvRows($("server-info"), [["Error", e.message]]); }
}

// ---- start ----

(async () => {
  try { startSession(await call("session")); } catch { showSignIn(); }
})();
