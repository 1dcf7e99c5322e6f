// The dashboard's entry point: asks the server who it is (/version; a token when it wants one),
// then wires the filter bar, the live list, the entry pane, the cluster panel and the exports.
// Plain ES modules, no build step and no framework (kshark/web/assets.py says why).

import { Api, AuthError } from "./api.js";
import { ClusterPanel } from "./cluster.js";
import { DetailPane } from "./detail.js";
import { $, formatCount } from "./dom.js";
import { FilterBar, queryFromUrl } from "./filter.js";
import { BUFFER_LIMIT, EntryList } from "./list.js";
import { EntryStream } from "./stream.js";

// Window over which entries/s is computed.
const RATE_WINDOW_MS = 5000;
const COUNTS_INTERVAL_MS = 500;
const COUNTS_MIN_MS = 200;

class Dashboard {
  constructor(api) {
    this.api = api;
    this.stream = null;
    this.query = "";
    this.arrivals = []; // [time, count] of recent batches, for the rate
    this.countsAt = 0;
    this.countsQueued = false;
    this.list = new EntryList($("list"), $("list-spacer"), (row) => this.detail.show(row));
    this.detail = new DetailPane($("detail"), api, {
      onCopy: (text) => copyText(text),
      onClose: () => this.detail.hide(),
      onProblem: (text) => this.problem(text),
    });
    this.cluster = new ClusterPanel(api, (text) => this.problem(text));
    this.filter = new FilterBar(api, (text) => this.start(text));
    $("pause").addEventListener("click", () => this.togglePause());
    for (const [id, path, name] of [["export-har", "api/har", "kshark.har"], ["export-pcap", "api/pcap", "kshark.pcapng"]]) {
      $(id).addEventListener("click", (event) => {
        if (!this.api.token) return; // the plain link streams the file to disk
        event.preventDefault();
        this.api.download(path, { q: this.query }, name).catch((err) => this.problem(`export failed: ${err.message}`));
      });
    }
    setInterval(() => this.renderCounts(), COUNTS_INTERVAL_MS);
  }

  async run() {
    $("role").textContent = `${this.api.role} ${this.api.version ?? ""}`;
    document.title = `kshark ${this.api.role}`;
    this.cluster.start();
    const ok = await this.filter.apply(queryFromUrl(), { push: false });
    if (!ok) this.start(null); // a shared link with a bad filter: show its error, stream nothing
  }

  start(query) {
    if (this.stream) this.stream.stop();
    if (this.list.paused) this.togglePause(); // a new filter shows its entries
    this.stream = null;
    this.list.clear();
    this.detail.hide();
    this.arrivals = [];
    this.queueCounts();
    if (query === null) {
      this.setConnection("idle", "no valid filter");
      return;
    }
    this.query = query;
    for (const [id, path] of [["export-har", "api/har"], ["export-pcap", "api/pcap"]]) {
      $(id).href = this.api.url(path, { q: query }).href;
    }
    $("list-empty").textContent = "Waiting for entries…";
    this.stream = new EntryStream(this.api, query, {
      onEntries: (entries) => {
        this.list.add(entries);
        this.arrivals.push([performance.now(), entries.length]);
        this.queueCounts();
      },
      onWorker: (frame) => this.cluster.onFrame(frame),
      onGap: (gap) => this.problem(`${gap.missed ?? "some"} entries missed${gap.worker ? ` on ${gap.worker}` : ""} (${gap.reason})`),
      onError: (error) => {
        this.filter.show(query, { valid: false, message: error.message });
        this.setConnection("error", error.message);
      },
      onState: (state, detail) => this.setConnection(state, detail),
      onDropped: (n) => this.list.addDropped(n),
    });
    this.stream.start();
  }

  /** Counts follow new entries at most every COUNTS_MIN_MS (text changes lay out the toolbar). */
  queueCounts() {
    if (this.countsQueued) return;
    this.countsQueued = true;
    const wait = Math.max(0, COUNTS_MIN_MS - (performance.now() - this.countsAt));
    setTimeout(() => {
      requestAnimationFrame(() => {
        this.countsQueued = false;
        this.renderCounts();
      });
    }, wait);
  }

  togglePause() {
    const button = $("pause");
    if (this.list.paused) {
      this.list.resume();
      button.textContent = "Pause";
      button.setAttribute("aria-pressed", "false");
    } else {
      this.list.pause();
      this.pausedAt = this.list.received;
      button.textContent = "Resume";
      button.setAttribute("aria-pressed", "true");
    }
    this.renderCounts();
  }

  setConnection(state, detail) {
    const node = $("connection");
    node.dataset.state = state;
    node.textContent = state;
    node.title = detail || "";
  }

  problem(text) {
    const node = $("connection");
    node.title = text;
    console.warn(text); // a warning, not an error: the page goes on
  }

  renderCounts() {
    const now = performance.now();
    this.countsAt = now;
    while (this.arrivals.length && now - this.arrivals[0][0] > RATE_WINDOW_MS) this.arrivals.shift();
    let recent = 0;
    for (const [, n] of this.arrivals) recent += n;
    const list = this.list;
    setText($("count-shown"), formatCount(list.length));
    setText($("count-matched"), formatCount(list.received));
    setText($("count-rate"), formatCount(Math.round(recent / (RATE_WINDOW_MS / 1000))));
    const dropped = $("dropped");
    dropped.hidden = list.dropped === 0;
    dropped.dataset.count = String(list.dropped);
    setText(dropped, `${formatCount(list.dropped)} older entries dropped from the view (it keeps the newest ${formatCount(BUFFER_LIMIT)})`);
    const note = $("paused-note");
    note.hidden = !list.paused;
    note.textContent = list.paused ? `paused: ${formatCount(list.received - this.pausedAt)} new since` : "";
    $("list-empty").hidden = list.length > 0;
  }
}

/** Text changes re-lay out their line: made only when the text differs. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    // no clipboard (a page served over plain http from another host): let the user copy
  }
  $("copy-text").value = text;
  $("copy-dialog").hidden = false;
  $("copy-text").select();
}

/** Ask for the token until /version accepts it. */
function askToken(api, problem) {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    const input = $("token-input");
    $("token-problem").textContent = problem || "";
    $("token-problem").hidden = !problem;
    dialog.hidden = false;
    input.focus();
    const done = () => {
      api.setToken(input.value.trim());
      input.value = "";
      dialog.hidden = true;
      $("token-ok").removeEventListener("click", done);
      input.removeEventListener("keydown", onKey);
      resolve();
    };
    const onKey = (event) => {
      if (event.key === "Enter") done();
    };
    $("token-ok").addEventListener("click", done);
    input.addEventListener("keydown", onKey);
  });
}

/** A token in the page's own URL (?token=…) is taken once and removed from the address bar. */
function takeTokenFromUrl(api) {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return;
  api.setToken(token);
  url.searchParams.delete("token");
  history.replaceState(null, "", url);
}

async function main() {
  const api = new Api();
  takeTokenFromUrl(api);
  $("copy-close").addEventListener("click", () => {
    $("copy-dialog").hidden = true;
  });
  let problem = null;
  for (;;) {
    try {
      await api.hello();
      break;
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      if (api.token) problem = "That token was refused.";
      api.setToken(null);
      await askToken(api, problem);
    }
  }
  const dashboard = new Dashboard(api);
  window.kshark = dashboard; // for the curious, in the console
  await dashboard.run();
}

main().catch((err) => {
  const node = $("connection");
  node.dataset.state = "error";
  node.textContent = `error: ${err.message}`;
});
