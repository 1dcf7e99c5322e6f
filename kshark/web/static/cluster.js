// The cluster panel. On a hub: every worker's state (up, down, hung), lag, connection drops and
// last error, from /status every STATUS_INTERVAL_MS, and at once from the stream's
// {"worker": …} frames (a worker that dies shows "down" as soon as the hub's connection to it
// breaks). On a worker: that worker's own counters.

import { $, el, fill, formatBytes, formatCount } from "./dom.js";

export const STATUS_INTERVAL_MS = 2000;

function stateOf(worker) {
  // The hub reports a hung worker (silent, no answer to a ping) as down with that reason.
  if (worker.state === "down" && /did not answer a ping|hung/i.test(worker.last_error || worker.reason || "")) return "hung";
  return worker.state || "unknown";
}

export class ClusterPanel {
  constructor(api, onProblem) {
    this.api = api;
    this.onProblem = onProblem;
    this.workers = new Map(); // id → the latest /status row, patched by state frames
    this.timer = null;
    this.inFlight = false;
  }

  start() {
    this.poll();
  }

  async poll() {
    clearTimeout(this.timer);
    if (!this.inFlight) {
      this.inFlight = true;
      try {
        const status = await this.api.json("status");
        this.apply(status);
      } catch (err) {
        this.onProblem(`status: ${err.message}`);
      } finally {
        this.inFlight = false;
      }
    }
    this.timer = setTimeout(() => this.poll(), STATUS_INTERVAL_MS);
  }

  apply(status) {
    if (this.api.role === "hub") {
      const fresh = new Map();
      for (const w of status.workers || []) fresh.set(w.id, w);
      this.workers = fresh;
      this.render();
      return;
    }
    this.renderWorker(status);
  }

  /** A {"worker": {id, state, reason}} frame from the stream. */
  onFrame(frame) {
    const known = this.workers.get(frame.id) || { id: frame.id };
    const patched = { ...known, state: frame.state };
    if (frame.reason) patched.last_error = frame.reason;
    this.workers.set(frame.id, patched);
    this.render();
  }

  render() {
    const rows = [];
    let up = 0;
    for (const w of this.workers.values()) {
      const state = stateOf(w);
      if (state === "up") up += 1;
      rows.push(
        el(
          "tr",
          { dataset: { worker: w.id } },
          el("td", { class: "mono", text: w.id, title: w.worker && w.worker !== w.id ? `its own id: ${w.worker}` : null }),
          el("td", { class: `state state-${state}`, text: state }),
          el("td", { text: w.lag === null || w.lag === undefined ? "–" : formatCount(w.lag) }),
          el("td", { text: formatCount(w.drops ?? 0) }),
          el("td", { text: formatCount(w.entries_relayed ?? 0) }),
          el("td", { class: "error", text: w.last_error ? `${w.last_error}${ago(w.last_error_seconds_ago)}` : "" }),
        ),
      );
    }
    fill($("cluster-rows"), ...rows);
    $("cluster-summary").textContent = `${up} of ${this.workers.size} workers up`;
  }

  renderWorker(status) {
    const drops = (status.dropped_kernel ?? 0) + (status.dropped_ours ?? 0);
    const store = status.store || {};
    fill(
      $("cluster-rows"),
      el(
        "tr",
        { dataset: { worker: status.worker || "this worker" } },
        el("td", { class: "mono", text: status.worker || "this worker" }),
        el("td", { class: "state state-up", text: "up" }),
        el("td", { text: "–" }),
        el("td", { text: formatCount(drops), title: `kernel ${status.dropped_kernel ?? 0}, kshark ${status.dropped_ours ?? 0}` }),
        el("td", { text: formatCount(status.entries ?? status.last_seq ?? 0) }),
        el("td", { class: "error", text: "" }),
      ),
    );
    $("cluster-summary").textContent =
      `a single worker · store ${formatBytes(store.bytes_used)} of ${formatBytes(store.storage_limit)}`;
  }
}

function ago(seconds) {
  if (typeof seconds !== "number") return "";
  if (seconds < 90) return ` (${Math.round(seconds)} s ago)`;
  return ` (${Math.round(seconds / 60)} min ago)`;
}
