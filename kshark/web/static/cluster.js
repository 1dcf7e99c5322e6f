// The cluster panel. On a hub: every worker's state (up, degraded, down, hung), lag, its own
// drops (packets, entries it could not store), entries relayed and last error, from /status
// every STATUS_INTERVAL_MS, and at once from the stream's {"worker": …} frames (a worker that
// dies shows "down" as soon as the hub's connection to it breaks; one whose frames the hub
// drops, "degraded"). On a worker: that worker's own counters.

import { $, el, fill, formatBytes, formatCount } from "./dom.js";

export const STATUS_INTERVAL_MS = 2000;

// The hub says "down" for every failure, with why. A worker that took the connection but never
// answered (a stopped process), or whose address did not answer at all, is hung rather than
// gone; the hub's words for it (kshark/hub): the relay's "… did not answer a ping within … (hung
// or unreachable)", the monitor's "its /status did not answer within …", a reconnect's
// "connecting timed out after …". Refused, reset or closed connections are "down".
const HUNG = /did not answer|timed out|hung/i;

function stateOf(worker) {
  if (worker.state === "down") return HUNG.test(worker.last_error || "") ? "hung" : "down";
  // Up, but the hub dropped frames of it lately (hub /status "degraded": the last 60 s).
  if (worker.state === "up" && worker.degraded) return "degraded";
  return worker.state || "unknown";
}

/** "–" for a count the hub does not know (not read yet, or the worker does not say). */
function count(n) {
  return typeof n === "number" ? formatCount(n) : "–";
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

  /** A {"worker": {id, state, reason}} frame from the stream: up, down or degraded. */
  onFrame(frame) {
    const known = this.workers.get(frame.id) || { id: frame.id };
    let patched;
    if (frame.state === "degraded") {
      // Connected, but a frame of it was dropped: reason "dropped <what>".
      const what = (frame.reason || "").replace(/^dropped /, "");
      patched = { ...known, state: "up", degraded: true, last_drop: what, last_drop_seconds_ago: 0 };
      patched.frames_dropped = Math.max(1, known.frames_dropped ?? 0);
    } else {
      patched = { ...known, state: frame.state };
      if (frame.state === "down" && frame.reason) {
        patched.last_error = frame.reason;
        patched.last_error_seconds_ago = 0;
      }
    }
    this.workers.set(frame.id, patched);
    this.render();
  }

  render() {
    const rows = [];
    const tally = { up: 0, degraded: 0, hung: 0, down: 0 };
    for (const w of this.workers.values()) {
      const state = stateOf(w);
      if (state in tally) tally[state] += 1;
      const packets =
        typeof w.dropped_kernel === "number" || typeof w.dropped_ours === "number"
          ? (w.dropped_kernel ?? 0) + (w.dropped_ours ?? 0)
          : null;
      const problems = [];
      if (state === "degraded") problems.push(`dropped ${w.last_drop || "a frame"}${ago(w.last_drop_seconds_ago)}`);
      if (w.last_error) problems.push(`${w.last_error}${ago(w.last_error_seconds_ago)}`);
      rows.push(
        el(
          "tr",
          { dataset: { worker: w.id } },
          el("td", { class: "mono", text: w.id, title: w.worker && w.worker !== w.id ? `its own id: ${w.worker}` : null }),
          el("td", {
            class: `state state-${state}`,
            text: state,
            title: state === "degraded" ? `the hub dropped ${count(w.frames_dropped)} frames of it; the last: ${w.last_drop}` : null,
          }),
          el("td", { class: "lag", text: w.lag === null || w.lag === undefined ? "–" : formatCount(w.lag) }),
          el("td", {
            class: "drops",
            text: count(packets),
            title: `kernel ${count(w.dropped_kernel)}, kshark ${count(w.dropped_ours)}; the hub's connections to it that failed: ${count(w.drops)}`,
          }),
          el("td", { class: w.dropped_entries ? "lost" : null, text: count(w.dropped_entries) }),
          el("td", { class: "relayed", text: formatCount(w.entries_relayed ?? 0) }),
          el("td", { class: "error", text: problems.join(" · ") }),
        ),
      );
    }
    fill($("cluster-rows"), ...rows);
    const up = tally.up + tally.degraded; // degraded workers are up: their entries flow
    const more = ["degraded", "hung", "down"].filter((s) => tally[s]).map((s) => `${tally[s]} ${s}`);
    $("cluster-summary").textContent = [`${up} of ${this.workers.size} workers up`, ...more].join(" · ");
  }

  renderWorker(status) {
    const store = status.store || {};
    fill(
      $("cluster-rows"),
      el(
        "tr",
        { dataset: { worker: status.worker || "this worker" } },
        el("td", { class: "mono", text: status.worker || "this worker" }),
        el("td", { class: "state state-up", text: "up" }),
        el("td", { class: "lag", text: "–" }),
        el("td", {
          class: "drops",
          text: formatCount((status.dropped_kernel ?? 0) + (status.dropped_ours ?? 0)),
          title: `kernel ${count(status.dropped_kernel)}, kshark ${count(status.dropped_ours)}`,
        }),
        el("td", { class: store.dropped_entries ? "lost" : null, text: count(store.dropped_entries) }),
        el("td", { class: "relayed", text: formatCount(status.entries ?? status.last_seq ?? 0) }),
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
