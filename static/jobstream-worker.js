/**
 * The SharedWorker behind jobstream.js: ONE EventSource for every tab of this
 * origin that asks for the same stream (the worker's name is the stream's
 * url and topics). It keeps the jobs it has seen, so a tab that joins late
 * starts from the current picture, and relays every event and status change
 * to every tab's port. The browser keeps it alive while any tab holds it.
 */

import { Hub, JobStore, Visibility } from "./jobstream.js";

const ports = new Set();
// Every tab hidden: the stream goes to the background (?qos=background).
const visibility = new Visibility((all) => hub?.setBackground(all));
const store = new JobStore();
const types = new Set(); // event names the tabs asked for, kept across hub restarts
let hub = null;
let status = { state: "connecting", retryInMs: null, attempt: 0, since: Date.now() };

function broadcast(message) {
  for (const port of ports) port.postMessage(message);
}

function startHub() {
  const [url, topics, wire = {}] = JSON.parse(self.name.slice("jobstream:".length));
  hub = new Hub(
    { url, topics, ...wire, lastEventId: store.lastEventId, events: [...types] },
    {
      event(msg) {
        if (store.apply(msg) === null) return;
        broadcast({ t: "event", msg });
      },
      status(s) {
        status = s;
        broadcast({ t: "status", status });
      },
    },
  );
  hub.start();
  if (visibility.all) hub.setBackground(true);
}

self.onconnect = (e) => {
  const port = e.ports[0];
  if (typeof EventSource !== "function") {
    // Some browsers have SharedWorker but no EventSource inside workers.
    port.postMessage({ t: "unsupported" });
    return;
  }
  port.onmessage = ({ data }) => {
    if (data.t === "hello" || data.t === "listen") {
      for (const type of data.events || [data.type]) {
        types.add(type);
        hub?.addEventType(type);
      }
    }
    if (data.t === "hello") {
      // A tab joins, or comes back from the back/forward cache after its "bye".
      ports.add(port);
      if (!hub) startHub();
      port.postMessage({ t: "state", jobs: store.list(), lastEventId: store.lastEventId, synced: store.synced, status });
    } else if (data.t === "visibility") {
      visibility.set(port, data.hidden);
    } else if (data.t === "restart") {
      hub?.restart();
    } else if (data.t === "bye") {
      ports.delete(port);
      visibility.drop(port);
      if (ports.size === 0 && hub) {
        // The last tab left (or closed its Jobstream): drop the stream; a
        // tab that comes back resumes from the last id.
        hub.stop();
        hub = null;
      }
    }
  };
  port.start();
};
