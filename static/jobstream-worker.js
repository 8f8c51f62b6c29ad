/**
 * The SharedWorker behind jobstream.js: ONE EventSource for every tab of this
 * origin that asks for the same stream (the worker's name is the stream's
 * url and topics). It keeps the jobs it has seen, so a tab that joins late
 * starts from the current picture, and relays every event and status change
 * to every tab's port. The browser keeps it alive while any tab holds it.
 */

import { Hub, JobStore } from "./jobstream.js";

const ports = new Set();
const store = new JobStore();
let hub = null;
let status = { state: "connecting", retryInMs: null, attempt: 0, since: Date.now() };

function broadcast(message) {
  for (const port of ports) port.postMessage(message);
}

function startHub() {
  const [url, topics] = JSON.parse(self.name.slice("jobstream:".length));
  hub = new Hub(
    { url, topics },
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
}

self.onconnect = (e) => {
  const port = e.ports[0];
  if (typeof EventSource !== "function") {
    // Some browsers have SharedWorker but no EventSource inside workers.
    port.postMessage({ t: "unsupported" });
    return;
  }
  ports.add(port);
  port.onmessage = ({ data }) => {
    if (data.t === "hello") {
      for (const type of data.events || []) hub.addEventType(type);
    } else if (data.t === "listen") {
      hub.addEventType(data.type);
    } else if (data.t === "bye") {
      ports.delete(port);
    }
  };
  port.start();
  if (!hub) startHub();
  port.postMessage({ t: "state", jobs: store.list(), lastEventId: store.lastEventId, status });
};
