// The job board: renders what jobstream.js delivers and posts to /jobs.
// Job data (names, messages, params, errors) only ever reaches the page
// through textContent and attributes, never as HTML.

import { connect, orderKey } from "./jobstream.js";

const ACTIVE = new Set(["pending", "in_progress"]);
const STATUS_WORDS = { pending: "pending", in_progress: "in progress", completed: "completed", cancelled: "cancelled", error: "error" };
const STATE_WORDS = {
  connecting: "connecting",
  live: "live",
  reconnecting: "reconnecting",
  busy: "server busy",
  restarting: "server restarting",
  closed: "offline",
};
const MODE_WORDS = {
  worker: "One connection shared by every tab of this browser (SharedWorker).",
  leader: "This tab holds the connection for every tab of this browser (Web Locks).",
  follower: "Another tab holds the connection for this browser (Web Locks).",
  direct: "This tab has its own connection.",
};
const EXAMPLES = {
  sleep: '{"seconds": 5, "steps": 10}',
  fail: '{"message": "something went wrong"}',
  "": "{}",
};
const TOKEN_KEY = "jobstream.apiToken";
// What the jobs area says while it has no picture yet, by connection state.
// An EventSource that gets no answer stays CONNECTING without an error, so
// after this long "connecting" is reported as not connecting.
const CONNECT_PATIENCE_MS = 5000;
const WAITING_WORDS = {
  connecting: "Connecting…",
  slow: "Cannot connect to the server yet. Still trying…",
  live: "Loading jobs…",
  reconnecting: "Cannot reach the server. Reconnecting…",
  busy: "The server is at capacity. Retrying…",
  restarting: "The server is restarting. Retrying…",
  closed: "Not connected.",
};
const EMPTY_WORDS = "No jobs yet. Start one above.";

const $ = (sel) => document.querySelector(sel);
const rows = $("#job-rows");
const rowTemplate = $("#row-template");
const byId = new Map(); // job id -> row
const shown = new Set(Object.keys(STATUS_WORDS)); // all statuses by default

// ?mode=locks|direct|worker picks the transport (for testing the fall-backs);
// ?topic=<pattern> (repeatable) adds topics to the jobs', e.g. for events of
// your own, which cannot be published under the reserved jobs/ prefix.
const query = new URLSearchParams(location.search);
const mode = query.get("mode") || "auto";
// ?transport=ws|auto picks the WebSocket (GET /ws) instead of SSE.
const transport = query.get("transport") || "sse";
const js = connect({ url: "/stream", topics: ["jobs/*", ...query.getAll("topic")], mode, transport });
window.jobstream = js; // for the console and the tests

// -- rendering -----------------------------------------------------------

function render(job) {
  let row = byId.get(job.id);
  if (!row) {
    row = rowTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.jobId = job.id;
    row.dataset.order = orderKey(job);
    row.querySelector(".cancel").addEventListener("click", () => cancel(job.id, row));
    byId.set(job.id, row);
    insertInOrder(row);
  }
  row.dataset.status = job.status;
  row.dataset.version = job.version;
  row.dataset.receivedAt = Date.now();
  row.hidden = !shown.has(job.status);
  row.querySelector(".job-name").textContent = job.name || job.type;
  row.querySelector(".job-name").title = job.id;
  const params = job.params && Object.keys(job.params).length ? JSON.stringify(job.params) : "";
  row.querySelector(".job-params").textContent = params;
  row.querySelector(".c-type").textContent = job.type;
  const badge = row.querySelector(".badge");
  badge.textContent = STATUS_WORDS[job.status] || job.status;
  const bar = row.querySelector("progress");
  bar.value = Math.max(0, Math.min(1, Number(job.progress) || 0));
  bar.textContent = `${Math.round(bar.value * 100)}%`;
  bar.setAttribute("aria-label", `${Math.round(bar.value * 100)}% done`);
  const message = row.querySelector(".message");
  message.textContent = job.status === "error" ? job.error || job.message || "" : job.message || "";
  setTime(row.querySelector(".c-created time"), job.created_at);
  setTime(row.querySelector(".c-finished time"), job.finished_at);
  row.querySelector(".duration").textContent = duration(job.started_at, job.finished_at);
  const cancelButton = row.querySelector(".cancel");
  cancelButton.hidden = !ACTIVE.has(job.status);
  if (!ACTIVE.has(job.status)) cancelButton.disabled = false;
  scheduleCounts();
}

function insertInOrder(row) {
  const key = row.dataset.order;
  for (const other of rows.children) {
    if (other.dataset.order < key) return rows.insertBefore(row, other);
  }
  rows.append(row);
}

/** Make the table exactly the given jobs (a snapshot, or joining the shared stream). */
function replaceAll(jobs) {
  const keep = new Set(jobs.map((j) => j.id));
  for (const [id, row] of byId) {
    if (!keep.has(id)) {
      row.remove();
      byId.delete(id);
    }
  }
  rows.replaceChildren(...jobs.map((j) => byId.get(j.id)).filter(Boolean));
  scheduleCounts();
}

function setTime(el, iso) {
  if (!iso) {
    el.textContent = "";
    el.removeAttribute("datetime");
    return;
  }
  const d = new Date(iso);
  el.dateTime = iso;
  el.title = d.toLocaleString();
  const sameDay = d.toDateString() === new Date().toDateString();
  el.textContent = sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function duration(start, end) {
  if (!start || !end) return "";
  const s = (new Date(end) - new Date(start)) / 1000;
  if (!(s >= 0)) return "";
  return s < 60 ? ` · ${s.toFixed(1)} s` : ` · ${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

let countsPending = false;
function scheduleCounts() {
  if (countsPending) return;
  countsPending = true;
  queueMicrotask(() => {
    countsPending = false;
    const counts = Object.fromEntries(Object.keys(STATUS_WORDS).map((s) => [s, 0]));
    for (const row of byId.values()) counts[row.dataset.status] = (counts[row.dataset.status] || 0) + 1;
    for (const el of document.querySelectorAll("[data-count]")) el.textContent = counts[el.dataset.count] || 0;
    showEmpty();
  });
}

/**
 * "No jobs yet" only once the server's snapshot said so: before that the
 * table is empty because nothing has arrived, and the area says why.
 */
function showEmpty() {
  const el = $("#empty");
  el.hidden = byId.size > 0;
  let state = js.synced ? "empty" : js.status.state;
  if (state === "connecting" && !patient) state = "slow";
  el.dataset.state = state;
  el.textContent = state === "empty" ? EMPTY_WORDS : WAITING_WORDS[state] || WAITING_WORDS.connecting;
}

// -- the stream ----------------------------------------------------------

let patient = true;
setTimeout(() => {
  patient = false;
  showEmpty();
}, CONNECT_PATIENCE_MS);

js.subscribe("jobs/*", render);
js.on("snapshot", ({ jobs }) => replaceAll(jobs));

// -- who is signed in ------------------------------------------------------
// The page's origin signs users in by setting the jobstream_token cookie;
// /me reads it as /stream does. Asked again at each (re)connection and
// refusal: the web app may have signed someone else in, renewed the token,
// or let it expire.

async function showWho() {
  const el = $("#who");
  let me;
  try {
    const response = await fetch("/me", { headers: { Accept: "application/json" } });
    me = response.ok ? await response.json() : { signed_in: false, refused: response.status };
  } catch {
    return; // offline: the connection state says so
  }
  if (me.stream_auth === "off") {
    el.hidden = true; // every reader sees everything: nobody to name
    return;
  }
  el.hidden = false;
  el.dataset.signedIn = String(Boolean(me.signed_in));
  noticeWhoChanged(me);
  if (me.signed_in) {
    el.textContent = me.sub ? `Signed in as ${me.sub}${me.admin ? " (admin)" : ""}` : "Signed in with the operator key";
  } else {
    el.textContent = me.refused === 401 ? "Sign-in expired or invalid: sign in again" : "Not signed in: public jobs only";
  }
}

// The tabs of this browser share one stream, opened with whoever's cookie
// was there then. localStorage (shared by the tabs) remembers whom; a tab
// that finds someone else signed in restarts the shared stream, so no tab
// shows the previous user's jobs, and the others relabel themselves.
const WHO_KEY = "jobstream.signedInAs";

function noticeWhoChanged(me) {
  const who = me.signed_in ? me.sub ?? "(operator)" : "";
  let before = null;
  try {
    before = localStorage.getItem(WHO_KEY);
    localStorage.setItem(WHO_KEY, who);
  } catch {
    return; // storage disabled: the stream changes reader at its token's expiry
  }
  if (before !== null && before !== who) js.restart();
}

addEventListener("storage", (e) => e.key === WHO_KEY && showWho());

showWho();

let countdown = null;
js.onStatus((status) => {
  // "busy" includes a 401 (EventSource hides the status): /me tells an expired sign-in.
  if (status.state === "live" || status.state === "busy") showWho();
  const conn = $("#conn");
  conn.dataset.state = status.state;
  conn.dataset.mode = status.mode || "";
  $("#conn-state").textContent = STATE_WORDS[status.state] || status.state;
  $("#conn-mode").textContent = MODE_WORDS[status.mode] || "";
  clearInterval(countdown);
  const detail = $("#conn-detail");
  detail.textContent = status.background ? "in the background: progress every few seconds" : "";
  conn.dataset.background = String(Boolean(status.background));
  if (status.retryInMs != null && (status.state === "busy" || status.state === "restarting")) {
    const at = status.since + status.retryInMs;
    const tick = () => {
      const left = Math.ceil((at - Date.now()) / 1000);
      detail.textContent = left > 0 ? `retrying in ${left} s` : "retrying…";
    };
    tick();
    countdown = setInterval(tick, 1000);
  }
  showEmpty();
});

// -- filters -------------------------------------------------------------

$("#filters").addEventListener("change", (e) => {
  if (e.target.checked) shown.add(e.target.value);
  else shown.delete(e.target.value);
  for (const row of byId.values()) row.hidden = !shown.has(row.dataset.status);
});

// -- start and cancel ----------------------------------------------------

const typeSelect = $("#job-type");
const paramsInput = $("#job-params");
const customField = $("#custom-type-field");
const tokenInput = $("#api-token");
tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
tokenInput.addEventListener("input", () => {
  if (tokenInput.value) sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
  else sessionStorage.removeItem(TOKEN_KEY);
});

const exampleText = (type) => EXAMPLES[type] ?? "{}";
paramsInput.value = exampleText(typeSelect.value);
typeSelect.addEventListener("change", () => {
  customField.hidden = typeSelect.value !== "";
  // Swap the example only if the user has not written params of their own.
  const untouched = paramsInput.value.trim() === "" || Object.keys(EXAMPLES).some((t) => paramsInput.value === exampleText(t));
  if (untouched) paramsInput.value = exampleText(typeSelect.value);
});

function say(text, kind = "error") {
  const el = $("#form-message");
  el.textContent = text;
  el.dataset.kind = kind;
}

async function api(path, body) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body ?? {}) });
  let data = null;
  try {
    data = await response.json();
  } catch {
    // an error page that is not JSON: the status says enough
  }
  if (!response.ok) {
    if (response.status === 401 || response.status === 403) $(".token").open = true;
    throw new Error(data?.error || `HTTP ${response.status}`);
  }
  return data;
}

$("#start-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const type = typeSelect.value || $("#job-custom-type").value.trim();
  if (!type) return say("Name the job type.");
  let params;
  try {
    params = paramsInput.value.trim() ? JSON.parse(paramsInput.value) : {};
  } catch (err) {
    return say(`Params are not valid JSON: ${err.message}`);
  }
  if (params === null || typeof params !== "object" || Array.isArray(params)) {
    return say("Params must be a JSON object, like {\"seconds\": 5}.");
  }
  const body = { type, params };
  const name = $("#job-name").value.trim();
  if (name) body.name = name;
  const button = $("#start-button");
  button.disabled = true;
  try {
    const job = await api("/jobs", body);
    if (job && job.id && !byId.has(job.id)) render(job);
    say(`Started ${job?.name || type}.`, "ok");
    $("#job-name").value = "";
  } catch (err) {
    say(`Could not start the job: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

async function cancel(id, row) {
  const button = row.querySelector(".cancel");
  button.disabled = true;
  try {
    await api(`/jobs/${encodeURIComponent(id)}/cancel`);
  } catch (err) {
    button.disabled = false;
    say(`Could not cancel: ${err.message}`);
  }
}
