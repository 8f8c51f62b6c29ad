/**
 * jobstream.js: a browser client for Jobstream's `/stream` (Server-Sent Events)
 * that shares ONE connection among all tabs of a browser.
 *
 *   import { connect } from "/static/jobstream.js";
 *   const js = connect({ url: "/stream", topics: ["jobs/*"] });
 *   const off = js.subscribe("jobs/*", (job) => render(job));   // current jobs now, then every newer version
 *   js.on("snapshot", ({ jobs }) => prune(jobs));                // the whole picture was replaced
 *   js.onStatus((s) => indicator(s.state));                      // connecting | live | reconnecting | busy | restarting | closed
 *   js.synced;                                                    // false until the server's first snapshot arrived
 *   js.close();
 *
 * Why one connection: over HTTP/1.1 a browser opens at most six connections
 * per host across ALL its tabs, so the seventh tab of a page that holds an
 * EventSource hangs. The transport, by `mode` ("auto" picks the first that works):
 *   "worker": a SharedWorker (jobstream-worker.js) holds the EventSource and relays to every tab;
 *   "locks":  the tab holding a Web Lock leads, holds the EventSource and relays over BroadcastChannel;
 *             when it goes away the next tab in the lock queue takes over and resumes from the last id;
 *   "direct": one EventSource in this tab.
 *
 * Protocol (see docs/api.md): every event carries an `id`; the connection
 * resumes from the last one (the browser sends `Last-Event-ID` on its own
 * reconnects; a new EventSource passes `?last_event_id=`). `reset` + `snapshot`
 * replace the picture when a resume cannot be served. `shutdown` means the server
 * is restarting and the browser reconnects after the `retry:` it sent. An
 * EventSource that the server refused (503/429: at capacity) is CLOSED for good,
 * so it is re-created after a jittered exponential backoff; `overloaded` is
 * the same refusal as an event (STREAM_REJECT_MODE=retry).
 *
 * The SSE wire carries no topic: a `job` event's topic is `jobs/<job.id>`. Other
 * events are delivered by event name with `on(name, cb)`; the server-side filter
 * is the `topics` option.
 */

export const STATES = Object.freeze(["connecting", "live", "reconnecting", "busy", "restarting", "closed"]);
const CORE_EVENTS = ["snapshot", "job", "reset", "shutdown", "overloaded", "message"];
const SETTLE_MS = 150;
// Ids a background stream remembers; past this the catch-up is skipped (the
// jobs still end up right: the next change of each brings its newest version).
const MAX_SEEN = 10000;
const DEFAULTS = Object.freeze({
  url: "/stream",
  topics: ["jobs/*"],
  mode: "auto", // "auto" | "worker" | "locks" | "direct"
  events: [], // extra event names to receive with on(); core ones are always on
  backoffBaseMs: 1000,
  backoffMaxMs: 30000,
  stableMs: 5000, // a connection open this long resets the backoff
  withCredentials: false, // send cookies to a stream on another origin (CORS, STREAM_ALLOWED_ORIGINS)
  backgroundWhenHidden: true, // every tab hidden: ?qos=background (progress spaced out, state changes at once)
  transport: "sse", // "sse" | "ws" (GET /ws, JSON messages) | "auto" (WebSocket, SSE if it cannot open)
  wsUrl: null, // default: `url` with its last path segment "ws", on ws: or wss:
});

/**
 * Which tabs are hidden; calls `onChange(allHidden)` when that flips. Kept
 * where the connection is (the worker, the leader, a lone tab); a tab that
 * leaves counts as hidden, so the last visible tab closing sends the stream
 * to the background.
 */
export class Visibility {
  constructor(onChange) {
    this.hidden = new Map();
    this.onChange = onChange;
    this.all = false;
  }

  set(who, hidden) {
    this.hidden.set(who, hidden);
    this._check();
  }

  drop(who) {
    this.hidden.delete(who);
    this._check();
  }

  _check() {
    const all = this.hidden.size > 0 && [...this.hidden.values()].every(Boolean);
    if (all !== this.all) {
      this.all = all;
      this.onChange(all);
    }
  }
}

function pageHidden() {
  return typeof document !== "undefined" && document.visibilityState === "hidden";
}

/** Open (or join) the shared stream. Returns a Jobstream. */
export function connect(options = {}) {
  return new Jobstream(options);
}

/** `jobs/*` matches every topic under `jobs/`; `*` or "" matches all; otherwise exact. */
export function topicMatches(pattern, topic) {
  if (pattern === "" || pattern === "*") return true;
  return pattern.endsWith("*") ? topic.startsWith(pattern.slice(0, -1)) : topic === pattern;
}

/** Compare event ids `<ms>-<seq>`: <0, 0, >0, or null when either does not parse. */
export function compareIds(a, b) {
  const pa = parseId(a);
  const pb = parseId(b);
  if (!pa || !pb) return null;
  return pa[0] !== pb[0] ? Math.sign(pa[0] - pb[0]) : Math.sign(pa[1] - pb[1]);
}

function parseId(id) {
  const m = typeof id === "string" ? /^(\d+)-(\d+)$/.exec(id) : null;
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** "Equal jitter": uniformly in [d/2, d] where d = min(max, base * 2^attempt). */
export function backoffDelay(attempt, baseMs, maxMs, random = Math.random) {
  const d = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(d / 2 + random() * (d / 2));
}

function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * The jobs one place knows, newest version of each. `apply` returns the jobs
 * an event changed, or null for an event already seen (a relay hand-over can
 * deliver one twice). A snapshot replaces everything: it is the server's truth.
 * `synced` says one has arrived (here, or in the store this one was loaded
 * from): until then an empty store means "not known yet", not "no jobs".
 */
export class JobStore {
  constructor() {
    this.jobs = new Map();
    this.lastEventId = null;
    this.synced = false;
  }

  apply(msg) {
    const replaces = msg.type === "snapshot" || msg.type === "reset";
    // `late`: an event a background stream skipped, replayed after newer ones
    // (Hub.setBackground); jobs still only move to a newer version.
    const old = msg.id && this.lastEventId && compareIds(msg.id, this.lastEventId) <= 0;
    if (old && !replaces && !msg.late) return null;
    if (msg.id && !old) this.lastEventId = msg.id;
    if (msg.type === "snapshot") {
      const jobs = Array.isArray(msg.data?.jobs) ? msg.data.jobs : [];
      this.jobs = new Map(jobs.filter(isJob).map((j) => [j.id, j]));
      this.synced = true;
      return [...this.jobs.values()];
    }
    if (msg.type === "job" && isJob(msg.data)) {
      const old = this.jobs.get(msg.data.id);
      if (old && !(msg.data.version > old.version)) return [];
      this.jobs.set(msg.data.id, msg.data);
      return [msg.data];
    }
    return [];
  }

  load(state) {
    this.jobs = new Map((state.jobs || []).filter(isJob).map((j) => [j.id, j]));
    this.lastEventId = state.lastEventId || null;
    this.synced = !!state.synced;
  }

  /** Newest first, as the server's snapshot. */
  list() {
    return [...this.jobs.values()].sort(newestFirst);
  }
}

function isJob(j) {
  return j !== null && typeof j === "object" && typeof j.id === "string";
}

/** A string that sorts jobs by creation (RFC 3339 UTC sorts as text), then id. */
export function orderKey(job) {
  return `${job.created_at || ""}|${job.id}`;
}

function newestFirst(a, b) {
  const ka = orderKey(a);
  const kb = orderKey(b);
  return ka < kb ? 1 : ka > kb ? -1 : 0;
}

/**
 * The one EventSource and its reconnect policy. Runs in the SharedWorker, in
 * the leader tab, or in a lone tab; `sink.event(msg)` and `sink.status(status)`
 * receive everything. Never two EventSources: the old one is closed before a
 * timer may create the next, and only one timer exists.
 */
export class Hub {
  constructor(options, sink) {
    this.options = { ...DEFAULTS, ...options };
    this.sink = sink;
    this.lastEventId = options.lastEventId || null;
    this.types = new Set([...CORE_EVENTS, ...(this.options.events || [])]);
    this.es = null;
    this.timer = null;
    this.liveTimer = null;
    this.stableTimer = null;
    this.attempt = 0;
    this.stopped = false;
    // Background (every tab hidden): `?qos=background`, low events spaced out
    // by the server. `backgroundFrom`: the id when it began; `seen`: the ids
    // delivered since, so the catch-up replay delivers only what was skipped.
    this.background = false;
    this.backgroundFrom = null;
    this.seen = null;
    this.catchUpUntil = null;
    this.caughtUp = null;
    // Resuming (a leader taking over) is a reconnect, not a first connect.
    const state = this.lastEventId ? "reconnecting" : "connecting";
    this.status = { state, retryInMs: null, attempt: 0, since: Date.now() };
  }

  start() {
    this.sink.status(this.status);
    this._open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.liveTimer);
    clearTimeout(this.stableTimer);
    if (this.es) this.es.close();
    this.es = null;
    this._setState("closed");
  }

  /**
   * Every tab hidden (true) or one shown (false). Over SSE a switch is one
   * reconnect: to the background with `qos=background` from the last id; back
   * with the id from which it went, so the replay brings every event the
   * background stream skipped (as `late` messages), and nothing is lost.
   */
  setBackground(hidden) {
    if (hidden === this.background || this.stopped) return;
    this.background = hidden;
    if (hidden) {
      // No id yet (nothing published since the history began): "0-0" replays
      // it all, or gets a reset and a snapshot once the history moved on.
      this.backgroundFrom = this.lastEventId || "0-0";
      this.seen = new Set();
    } else if (this.backgroundFrom && this.seen && this.seen.size < MAX_SEEN) {
      this.catchUpUntil = this.lastEventId;
      this.caughtUp = this.seen;
      this.lastEventId = this.backgroundFrom;
    }
    if (!hidden) this.seen = null;
    this.status = { ...this.status, background: hidden };
    this.sink.status(this.status);
    if (this.socket && this.socket.readyState === 1) {
      // Over a WebSocket: say so, and (back in front) resume from where it went.
      this.socket.send(JSON.stringify({ type: "visibility", hidden }));
      if (!hidden && this.catchUpUntil) this._subscribe(this.socket);
      return;
    }
    if (this.es) {
      this.es.close();
      this.es = null;
      clearTimeout(this.timer);
      this._open();
    }
  }

  /**
   * Start over as a new reader: reconnect with no id, so the stream opens
   * with the new credentials (the cookie of whoever signed in since) and a
   * snapshot that replaces everything the previous reader saw.
   */
  restart() {
    if (this.stopped) return;
    this.lastEventId = null;
    this.catchUpUntil = null;
    this.caughtUp = null;
    this.backgroundFrom = this.background ? "0-0" : null;
    this.seen = this.background ? new Set() : null;
    if (this.es) this.es.close();
    this.es = null;
    clearTimeout(this.timer);
    this._open();
  }

  /** Receive events of another name too (tabs ask for theirs). */
  addEventType(type) {
    if (this.types.has(type)) return;
    this.types.add(type);
    if (this.es && !this.socket) this._listen(this.es, type);
  }

  _open() {
    this.timer = null;
    if (this.stopped) return;
    const transport = this.options.transport;
    if ((transport === "ws" || (transport === "auto" && !this.wsFailed)) && typeof WebSocket === "function") {
      return this._openSocket();
    }
    this.socket = null;
    const url = new URL(this.options.url, globalThis.location?.href);
    for (const topic of this.options.topics) url.searchParams.append("topic", topic);
    if (this.lastEventId) url.searchParams.set("last_event_id", this.lastEventId);
    if (this.background) url.searchParams.set("qos", "background");
    const es = new EventSource(url.href, { withCredentials: Boolean(this.options.withCredentials) });
    this.es = es;
    es.onopen = () => {
      if (es !== this.es) return;
      // STREAM_REJECT_MODE=retry refuses with a 200 whose first event is
      // `overloaded` (or `shutdown`): say "live" only once that had its chance.
      clearTimeout(this.liveTimer);
      this.liveTimer = setTimeout(() => this._live(es), SETTLE_MS);
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => (this.attempt = 0), this.options.stableMs);
    };
    es.onerror = () => {
      if (es !== this.es) return;
      clearTimeout(this.liveTimer);
      clearTimeout(this.stableTimer);
      if (es.readyState === EventSource.CLOSED) {
        this._refused(0); // a non-200 answer: the browser will not retry this one
      } else if (this.status.state !== "restarting") {
        // Network error or the stream ended: the browser retries by itself
        // after `retry:` ms with Last-Event-ID (a new EventSource here would
        // be a second connection).
        this._setState(this.status.state === "connecting" ? "connecting" : "reconnecting");
      }
    };
    for (const type of this.types) this._listen(es, type);
  }

  _listen(es, type) {
    es.addEventListener(type, (e) => {
      if (es !== this.es) return;
      const msg = { type, id: e.lastEventId || null, data: parseData(e.data) };
      if (!this._track(msg)) return;
      if (type === "shutdown") {
        clearTimeout(this.liveTimer);
        this._setState("restarting", { retryInMs: msg.data?.retry_ms ?? null });
      } else if (type !== "overloaded") {
        this._live(es); // data flows: no need to wait
      }
      this.sink.event(msg);
      if (type === "overloaded") {
        const after = Number(msg.data?.retry_after) * 1000;
        this._refused(Number.isFinite(after) ? after : 0);
      }
    });
  }

  // -- over a WebSocket (GET /ws) ------------------------------------------

  _openSocket() {
    const url = new URL(this.options.wsUrl || this.options.url, globalThis.location?.href);
    if (!this.options.wsUrl) url.pathname = url.pathname.replace(/[^/]*$/, "ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url.href);
    this.es = ws; // the one connection, whichever kind: closed before the next is made
    this.socket = ws;
    let opened = false;
    ws.onopen = () => {
      if (ws !== this.es) return;
      opened = true;
      if (this.background) ws.send(JSON.stringify({ type: "visibility", hidden: true }));
      this._subscribe(ws);
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => (this.attempt = 0), this.options.stableMs);
    };
    ws.onmessage = (e) => {
      if (ws !== this.es) return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m.type === "pong") return this._live(ws);
      if (m.type === "error") return console.warn("jobstream: the server refused a message:", m.error);
      const type = m.type === "event" ? m.event : m.type;
      const msg = { type, id: m.id || null, data: m.data ?? null };
      if (!this._track(msg) || (m.type === "event" && !this.types.has(type))) return;
      this._live(ws);
      this.sink.event(msg);
    };
    ws.onclose = (e) => {
      if (ws !== this.es) return;
      this.es = null;
      clearTimeout(this.stableTimer);
      if (!opened && this.options.transport === "auto") this.wsFailed = true; // SSE from now on
      this._socketClosed(e.code, e.reason);
    };
  }

  _subscribe(ws) {
    const message = { type: "subscribe", topics: this.options.topics };
    if (this.lastEventId) message.last_event_id = this.lastEventId;
    ws.send(JSON.stringify(message));
    ws.send(JSON.stringify({ type: "ping" })); // its pong says "live"
  }

  /** What a close code means for the next attempt (docs/websocket.md). */
  _socketClosed(code, reason) {
    let hint = null;
    try {
      hint = JSON.parse(reason).retry_ms ?? null;
    } catch {
      // a plain-text reason
    }
    if (this.stopped) return;
    if (code === 1012) {
      this._setState("restarting", { retryInMs: hint });
      this.timer = setTimeout(() => this._open(), hint ?? this.options.backoffBaseMs);
    } else if (code === 1013) {
      this._refused(hint ?? 0);
    } else if (code === 4008 || code === 4001) {
      // Evicted (resume where it stopped) or token expired (the page's fresh cookie): at once.
      this._setState("reconnecting");
      this.timer = setTimeout(() => this._open(), 0);
    } else {
      // A network error or a close: back off, then resume by id.
      const delay = backoffDelay(this.attempt, this.options.backoffBaseMs, this.options.backoffMaxMs);
      this.attempt += 1;
      this._setState("reconnecting", { retryInMs: delay });
      this.timer = setTimeout(() => this._open(), delay);
    }
  }

  /** Keep the resume point; during a catch-up, pass on only what was skipped. */
  _track(msg) {
    const id = msg.id;
    if (!id) return true;
    if (this.catchUpUntil) {
      if (compareIds(id, this.catchUpUntil) <= 0) {
        if (this.caughtUp?.has(id)) return false; // delivered while in the background
        msg.late = true;
        return true;
      }
      this.catchUpUntil = null;
      this.caughtUp = null;
    }
    if (!this.lastEventId || compareIds(id, this.lastEventId) > 0 || msg.type === "snapshot") this.lastEventId = id;
    if (this.seen && this.seen.size < MAX_SEEN) this.seen.add(id);
    return true;
  }

  _live(es) {
    clearTimeout(this.liveTimer);
    if (es === this.es && this.status.state !== "live") this._setState("live");
  }

  _refused(minDelayMs) {
    clearTimeout(this.liveTimer);
    clearTimeout(this.stableTimer);
    if (this.es) this.es.close();
    this.es = null;
    const delay = Math.max(
      minDelayMs,
      backoffDelay(this.attempt, this.options.backoffBaseMs, this.options.backoffMaxMs),
    );
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._open(), delay);
    // Refused while the server restarts is part of the restart (another instance at capacity).
    const state = this.status.state === "restarting" ? "restarting" : "busy";
    this._setState(state, { retryInMs: delay });
  }

  _setState(state, extra = {}) {
    this.status = { state, retryInMs: null, attempt: this.attempt, since: Date.now(), background: this.background, ...extra };
    this.sink.status(this.status);
  }
}

/** One tab's view of the shared stream. Create it with `connect()`. */
export class Jobstream {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.options.url = new URL(this.options.url, location.href).href;
    this.options.topics = [...this.options.topics].sort();
    // The worker's name: what its one connection is (it builds its Hub from it).
    const wire = { transport: this.options.transport, wsUrl: this.options.wsUrl, withCredentials: this.options.withCredentials };
    this.key = `jobstream:${JSON.stringify([this.options.url, this.options.topics, wire])}`;
    this.tabId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    this.store = new JobStore();
    this.subs = new Set();
    this.listeners = new Map();
    this.statusCbs = new Set();
    this.status = { state: "connecting", mode: null, retryInMs: null, attempt: 0, since: Date.now() };
    this.closed = false;
    this.hadState = false;
    this._teardown = [];
    this._send = () => {};
    const mode = this.options.mode;
    const canWorker = typeof SharedWorker === "function";
    const canLocks = typeof navigator !== "undefined" && !!navigator.locks && typeof BroadcastChannel === "function";
    if ((mode === "auto" || mode === "worker") && canWorker) this._useWorker(canLocks);
    else if ((mode === "auto" || mode === "locks") && canLocks) this._useLocks();
    else this._useDirect();
    if (this.options.backgroundWhenHidden && typeof document !== "undefined") this._watchVisibility();
  }

  /** Tell whoever holds the connection whether this tab is hidden (gone counts as hidden). */
  _watchVisibility() {
    const report = () => this._send({ t: "visibility", hidden: pageHidden() });
    const gone = () => this._send({ t: "visibility", hidden: true });
    this._reportVisibility = report;
    document.addEventListener("visibilitychange", report);
    addEventListener("pagehide", gone);
    addEventListener("pageshow", report);
    this._teardown.unshift(() => {
      document.removeEventListener("visibilitychange", report);
      removeEventListener("pagehide", gone);
      removeEventListener("pageshow", report);
    });
    report();
  }

  /** cb(job) for every job whose topic (`jobs/<id>`) matches, now and on each newer version. */
  subscribe(pattern, cb) {
    const sub = { pattern, cb };
    this.subs.add(sub);
    for (const job of this.store.list()) if (topicMatches(pattern, `jobs/${job.id}`)) cb(job);
    return () => this.subs.delete(sub);
  }

  /** cb(data, msg) for every event of that name (`snapshot` also fires when a tab joins). */
  on(type, cb) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(cb);
    this._send({ t: "listen", type });
    return () => this.listeners.get(type).delete(cb);
  }

  /** cb({state, mode, retryInMs, attempt, since}) now and on every change. */
  onStatus(cb) {
    this.statusCbs.add(cb);
    cb(this.status);
    return () => this.statusCbs.delete(cb);
  }

  /** The jobs this tab knows, newest first. */
  jobs() {
    return this.store.list();
  }

  get lastEventId() {
    return this.store.lastEventId;
  }

  /**
   * True once the server's snapshot reached this tab (directly or through
   * whoever holds the connection). A tab that joins a connection still
   * opening gets a `snapshot` of no jobs with `synced` still false.
   */
  get synced() {
    return this.store.synced;
  }

  /**
   * Reopen the browser's shared stream as a new reader (every tab gets a
   * fresh snapshot): call it when your app signed a different user in, so
   * no tab keeps streaming the previous user's events until their token expires.
   */
  restart() {
    if (!this.closed) this._send({ t: "restart" });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    for (const fn of this._teardown.splice(0)) fn();
    this._setStatus({ ...this.status, state: "closed" });
  }

  // -- transports ---------------------------------------------------------

  _useDirect(mode = "direct") {
    const hub = new Hub(
      { ...this.options, lastEventId: this.store.lastEventId },
      { event: (msg) => this._deliver(msg), status: (s) => this._setStatus({ ...s, mode }) },
    );
    this._hub = hub;
    const seen = new Visibility((all) => hub.setBackground(all));
    this._send = (m) => {
      if (m.t === "listen") hub.addEventType(m.type);
      else if (m.t === "visibility") seen.set(this.tabId, m.hidden);
      else if (m.t === "restart") hub.restart();
    };
    this._teardown.push(() => hub.stop());
    for (const type of this.listeners.keys()) hub.addEventType(type);
    hub.start();
    return hub;
  }

  _useWorker(canLocks) {
    let worker;
    try {
      worker = new SharedWorker(new URL("./jobstream-worker.js", import.meta.url), { type: "module", name: this.key });
    } catch {
      return canLocks ? this._useLocks() : this._useDirect();
    }
    const port = worker.port;
    let phase = "waiting"; // -> "working" on the first message, or "gone" after a fall-back
    const fallBack = () => {
      if (this.closed || phase !== "waiting") return;
      phase = "gone";
      port.close();
      this._send = () => {};
      if (canLocks) this._useLocks();
      else this._useDirect();
      this._reportVisibility?.();
    };
    // A worker that cannot run (no module workers, no EventSource in workers)
    // reports an error or says so; this tab then leads or connects by itself.
    worker.onerror = fallBack;
    port.onmessage = ({ data }) => {
      if (data.t === "unsupported") return fallBack();
      if (phase === "gone") return;
      phase = "working";
      this._fromHub(data, "worker");
    };
    port.start();
    this._send = (m) => port.postMessage(m);
    const hello = () => port.postMessage({ t: "hello", events: this._eventNames() });
    const bye = () => port.postMessage({ t: "bye" });
    const back = (e) => e.persisted && hello(); // restored from the back/forward cache
    addEventListener("pagehide", bye);
    addEventListener("pageshow", back);
    this._teardown.push(() => {
      removeEventListener("pagehide", bye);
      removeEventListener("pageshow", back);
      bye();
      port.close();
    });
    hello();
  }

  _useLocks() {
    const channel = new BroadcastChannel(this.key);
    const abort = new AbortController();
    let release = null;
    let hub = null;
    let leaving = false; // a leader that leaves must not tell the others "closed"
    let mine = { t: "visibility", hidden: pageHidden() }; // this tab's, for a leader that asks
    const seen = new Visibility((all) => hub?.setBackground(all));
    const post = (m) => leaving || channel.postMessage(m);
    this._send = (m) => {
      if (m.t === "visibility") mine = m;
      if (hub && m.t === "listen") hub.addEventType(m.type);
      else if (hub && m.t === "visibility") seen.set(this.tabId, m.hidden);
      else if (hub && m.t === "restart") hub.restart();
      else post({ ...m, from: this.tabId });
    };
    channel.onmessage = ({ data }) => {
      if (data.to && data.to !== this.tabId) return;
      if (hub) {
        // Leader: answer joiners with the picture so far; take their event names.
        if (data.t === "hello") {
          for (const type of data.events || []) hub.addEventType(type);
          post({ t: "state", to: data.from, ...this._state() });
        } else if (data.t === "listen") hub.addEventType(data.type);
        else if (data.t === "visibility") seen.set(data.from, data.hidden);
        else if (data.t === "restart") hub.restart();
        return;
      }
      if (data.t === "ask-visibility") post({ ...mine, from: this.tabId });
      else if (data.t === "state" || this.hadState) this._fromHub(data, "follower");
      else if (data.t === "status") hello();
    };
    const hello = () => post({ t: "hello", from: this.tabId, events: this._eventNames() });
    hello();
    // Web Locks grant in request order; the holder keeps the lock until its
    // promise settles, or until its tab is gone, which is the hand-over.
    navigator.locks
      .request(this.key, { signal: abort.signal }, () => {
        if (this.closed) return null;
        hub = new Hub(
          { ...this.options, lastEventId: this.store.lastEventId },
          {
            event: (msg) => {
              post({ t: "event", msg });
              this._deliver(msg);
            },
            status: (s) => {
              post({ t: "status", status: s });
              this._setStatus({ ...s, mode: "leader" });
            },
          },
        );
        for (const type of this.listeners.keys()) hub.addEventType(type);
        hub.start();
        seen.set(this.tabId, mine.hidden);
        post({ t: "ask-visibility", from: this.tabId }); // a new leader learns the other tabs'
        return new Promise((resolve) => (release = resolve));
      })
      .catch(() => {}); // aborted by close()
    this._teardown.push(() => {
      leaving = true;
      abort.abort();
      if (hub) hub.stop();
      if (release) release();
      channel.close();
    });
  }

  _eventNames() {
    return [...new Set([...this.options.events, ...this.listeners.keys()])];
  }

  _state() {
    return { jobs: this.store.list(), lastEventId: this.store.lastEventId, synced: this.store.synced, status: this.status };
  }

  // -- receiving ----------------------------------------------------------

  _fromHub(data, mode) {
    if (data.t === "state") {
      this.hadState = true;
      this.store.load(data);
      this._notifyJobs(this.store.list());
      this._emit("snapshot", { jobs: this.store.list() }, { type: "snapshot", id: data.lastEventId });
      this._setStatus({ ...data.status, mode });
    } else if (data.t === "event") {
      this._deliver(data.msg);
    } else if (data.t === "status") {
      this._setStatus({ ...data.status, mode });
    }
  }

  _deliver(msg) {
    const changed = this.store.apply(msg);
    if (changed === null) return; // already seen
    this._notifyJobs(changed);
    const data = msg.type === "snapshot" ? { ...msg.data, jobs: this.store.list() } : msg.data;
    this._emit(msg.type, data, msg);
  }

  _notifyJobs(jobs) {
    for (const job of jobs) {
      const topic = `jobs/${job.id}`;
      for (const sub of this.subs) if (topicMatches(sub.pattern, topic)) safely(sub.cb, job);
    }
  }

  _emit(type, data, msg) {
    for (const cb of this.listeners.get(type) || []) safely(cb, data, msg);
  }

  _setStatus(status) {
    if (this.closed && status.state !== "closed") return;
    this.status = status;
    for (const cb of this.statusCbs) safely(cb, status);
  }
}

function safely(cb, ...args) {
  try {
    cb(...args);
  } catch (err) {
    // One broken subscriber must not starve the others.
    console.error("jobstream subscriber failed", err);
  }
}
