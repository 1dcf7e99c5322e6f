// One /api/wsFull stream for the current filter, with the JSON first frame (docs/api.md):
// `fields` asks the server for the list's columns only (the full entry is fetched from /item on
// click). Frames are queued as they arrive and parsed in batches, once per animation frame, within
// a time budget, so a burst of thousands of entries never blocks the page for long.
//
// If the connection drops (the hub or worker restarted, the network), the stream reopens with
// `since` = the last entry received from each worker (the hub cursor; a worker takes one id), so
// nothing is shown twice and nothing stored meanwhile is missed. A refused filter (error frame,
// close 1008) and a finished `limit(n)` (close 1000) are not retried.

export const LIST_FIELDS = [
  "id", "worker", "stream", "timestamp", "elapsedTime", "node.name",
  "src.ip", "src.port", "src.name", "src.namespace",
  "dst.ip", "dst.port", "dst.name", "dst.namespace",
  "protocol.abbr", "request.method", "request.path", "request.url", "response.status", "error.type",
];

// Frames waiting to be parsed. Past this, the oldest waiting frames are dropped unparsed (and
// counted with the view's dropped entries): the view keeps only the newest BUFFER_LIMIT anyway.
// Only reached when frames cannot be processed at all for a while (a hidden tab gets few timers).
export const MAX_PENDING = 50_000;
// Milliseconds of parsing per batch; what is left waits for the next frame.
const BATCH_BUDGET_MS = 8;
// Reconnect delays (ms): doubling from the first to the last, then staying there.
const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

export class EntryStream {
  /**
   * handlers: onEntries(list of entries), onWorker(state frame body), onGap(gap body),
   * onError(error body), onState(state, detail), onDropped(n).
   */
  constructor(api, query, handlers) {
    this.api = api;
    this.query = query;
    this.h = handlers;
    this.ws = null;
    this.pending = [];
    this.cursor = {}; // worker → last entry id received
    this.lastId = null;
    this.closed = false;
    this.retries = 0;
    this.scheduled = false;
    this.timer = null;
    this.retryTimer = null;
    this.flush = this.flush.bind(this);
  }

  start() {
    this.open();
  }

  stop() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.pending = [];
  }

  open() {
    if (this.closed) return;
    this.h.onState("connecting");
    const ws = this.api.openSocket("api/wsFull");
    this.ws = ws;
    let refused = false;
    let delivered = false;
    ws.onopen = () => {
      const first = { query: this.query, fields: LIST_FIELDS };
      const since = this.since();
      if (since !== null) first.since = since;
      ws.send(JSON.stringify(first));
      this.h.onState("live");
    };
    ws.onmessage = (event) => {
      delivered = true;
      if (typeof event.data !== "string") return;
      if (event.data.startsWith('{"error"')) refused = true;
      this.pending.push(event.data);
      if (this.pending.length > MAX_PENDING) {
        const extra = this.pending.length - MAX_PENDING;
        this.pending.splice(0, extra);
        this.h.onDropped(extra);
      }
      this.schedule();
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.flush(); // what arrived before the close is shown first
      if (this.closed) return;
      if (refused || event.code === 1008) {
        this.h.onState("error", "the server refused the filter");
        return;
      }
      if (event.code === 1000) {
        this.h.onState("closed", "the stream ended (limit reached)");
        return;
      }
      if (delivered) this.retries = 0;
      const delay = BACKOFF_MS[Math.min(this.retries, BACKOFF_MS.length - 1)];
      this.retries += 1;
      this.h.onState("connecting", `connection lost (code ${event.code}); retrying`);
      this.retryTimer = setTimeout(() => this.open(), delay);
    };
  }

  /** The resume cursor: the hub takes {worker: id}, a worker one id. */
  since() {
    if (this.api.role === "hub") return Object.keys(this.cursor).length ? this.cursor : null;
    return this.lastId;
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(this.flush);
    // Hidden tabs get no animation frames: a timer keeps the queue moving there.
    this.timer = setTimeout(this.flush, 250);
  }

  flush() {
    this.scheduled = false;
    clearTimeout(this.timer);
    const pending = this.pending;
    if (!pending.length) return;
    const started = performance.now();
    const entries = [];
    let i = 0;
    while (i < pending.length) {
      const text = pending[i++];
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        continue;
      }
      if (frame && typeof frame.id === "string") {
        entries.push(frame);
        if (typeof frame.worker === "string") this.cursor[frame.worker] = frame.id;
        this.lastId = frame.id;
      } else if (frame && frame.worker && typeof frame.worker === "object") {
        this.h.onWorker(frame.worker);
      } else if (frame && frame.gap) {
        this.h.onGap(frame.gap);
      } else if (frame && frame.error) {
        this.h.onError(frame.error);
      }
      if ((i & 63) === 0 && performance.now() - started > BATCH_BUDGET_MS) break;
    }
    this.pending = i === pending.length ? [] : pending.slice(i);
    if (entries.length) this.h.onEntries(entries);
    if (this.pending.length) this.schedule();
  }
}
