// The live list: a bounded buffer of rows and a virtualised view of it.
//
// - The buffer keeps the newest BUFFER_LIMIT rows (a ring); older ones are dropped from the view
//   and counted ("N older entries dropped from the view"). Rows hold only the columns.
// - Only the rows in sight (plus a margin) exist in the DOM, recycled as the list scrolls, so the
//   page costs the same with 100 entries or 10,000, and a batch of new entries is one re-render.
// - The view sticks to the newest entry unless the user scrolled away from the bottom.
// - Pause freezes what is shown (a copy of the buffer's rows at that moment); entries keep
//   arriving and are counted meanwhile; resume shows the live buffer again.

import { el, formatTime, peerLabel } from "./dom.js";

export const BUFFER_LIMIT = 10_000;
const ROW_HEIGHT = 24; // px, as .row in style.css
const OVERSCAN = 12; // rows rendered above and below the visible ones

function toRow(entry) {
  const status = entry.response?.status;
  const request = entry.request ?? {};
  return {
    id: entry.id,
    worker: entry.worker,
    stream: entry.stream,
    timestamp: entry.timestamp,
    time: formatTime(entry.timestamp),
    peers: `${peerLabel(entry.src)} → ${peerLabel(entry.dst)}`,
    proto: entry.protocol?.abbr ?? "",
    method: request.method ?? "",
    path: request.path ?? "",
    url: request.url ?? request.path ?? "",
    status: typeof status === "number" ? status : null,
    elapsed: typeof entry.elapsedTime === "number" ? entry.elapsedTime : null,
    node: entry.node?.name ?? "",
    error: entry.error?.type ?? null,
  };
}

class Ring {
  constructor(limit) {
    this.limit = limit;
    this.items = new Array(limit);
    this.start = 0;
    this.length = 0;
  }
  push(item) {
    if (this.length < this.limit) {
      this.items[(this.start + this.length) % this.limit] = item;
      this.length += 1;
      return false;
    }
    this.items[this.start] = item;
    this.start = (this.start + 1) % this.limit;
    return true; // the oldest was dropped
  }
  get(i) {
    return this.items[(this.start + i) % this.limit];
  }
  clear() {
    this.items = new Array(this.limit);
    this.start = 0;
    this.length = 0;
  }
  toArray() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.get(i);
    return out;
  }
}

export class EntryList {
  constructor(container, spacer, onSelect) {
    this.container = container;
    this.spacer = spacer;
    this.onSelect = onSelect;
    this.ring = new Ring(BUFFER_LIMIT);
    this.frozen = null; // the rows shown while paused
    this.dropped = 0;
    this.received = 0;
    this.stick = true;
    this.selectedId = null;
    this.pool = [];
    this.renderQueued = false;
    this.viewHeight = container.clientHeight;
    this.spacerHeight = -1;
    this.scrolledTo = -1; // the scrollTop the list last set itself
    container.addEventListener("scroll", () => {
      const top = container.scrollTop;
      if (top === this.scrolledTo) return; // our own scroll, not the user's
      // Computed from what the list knows, so a scroll event never forces a layout.
      this.stick = top + this.viewHeight >= this.spacerHeight - ROW_HEIGHT;
      this.queueRender();
    });
    container.addEventListener("click", (event) => {
      const row = event.target.closest(".row");
      if (row && row.dataset.index !== undefined) this.select(Number(row.dataset.index));
    });
    container.addEventListener("keydown", (event) => this.onKey(event));
    new ResizeObserver((entries) => {
      this.viewHeight = entries[entries.length - 1].contentRect.height;
      this.queueRender();
    }).observe(container);
  }

  get length() {
    return this.frozen ? this.frozen.length : this.ring.length;
  }

  at(i) {
    return this.frozen ? this.frozen[i] : this.ring.get(i);
  }

  clear() {
    this.ring.clear();
    this.dropped = 0;
    this.received = 0;
    this.stick = true;
    this.selectedId = null;
    this.queueRender();
  }

  add(entries) {
    for (const entry of entries) {
      if (this.ring.push(toRow(entry))) this.dropped += 1;
    }
    this.received += entries.length;
    if (!this.frozen) this.queueRender();
  }

  /** Frames dropped before they were parsed count as dropped from the view, too. */
  addDropped(n) {
    this.dropped += n;
    this.received += n;
  }

  pause() {
    this.frozen = this.ring.toArray();
    this.queueRender();
  }

  resume() {
    this.frozen = null;
    this.queueRender();
  }

  get paused() {
    return this.frozen !== null;
  }

  select(index) {
    const row = this.at(index);
    if (!row) return;
    this.selectedId = row.id;
    this.queueRender();
    this.onSelect(row);
  }

  onKey(event) {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    let index = -1;
    for (let i = 0; i < this.length; i++) if (this.at(i).id === this.selectedId) index = i;
    index = event.key === "ArrowDown" ? Math.min(this.length - 1, index + 1) : Math.max(0, index - 1);
    this.select(index);
    const top = index * ROW_HEIGHT;
    if (top < this.container.scrollTop) this.container.scrollTop = top;
    else if (top + ROW_HEIGHT > this.container.scrollTop + this.container.clientHeight) {
      this.container.scrollTop = top + ROW_HEIGHT - this.container.clientHeight;
    }
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  render() {
    // Writes only, from numbers the list keeps (row count, view height): reading the layout
    // (scrollHeight, clientHeight) between writes would force the browser to lay out mid-frame.
    const n = this.length;
    const container = this.container;
    const height = n * ROW_HEIGHT;
    if (height !== this.spacerHeight) {
      this.spacer.style.height = `${height}px`;
      this.spacerHeight = height;
    }
    let top = container.scrollTop;
    if (this.stick && !this.frozen) {
      top = Math.max(0, height - this.viewHeight);
      if (top !== this.scrolledTo || container.scrollTop !== top) {
        this.scrolledTo = top;
        container.scrollTop = top;
      }
    }
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const visible = Math.ceil(this.viewHeight / ROW_HEIGHT) + 2 * OVERSCAN;
    const last = Math.min(n, first + visible);
    const count = Math.max(0, last - first);
    while (this.pool.length < count) {
      const node = makeRowElement();
      this.pool.push(node);
      this.spacer.append(node);
    }
    for (let k = 0; k < this.pool.length; k++) {
      const node = this.pool[k];
      if (k >= count) {
        if (!node.hidden) node.hidden = true;
        node.rowId = null;
        node.rowIndex = -1;
        continue;
      }
      const index = first + k;
      const row = this.at(index);
      if (node.hidden) node.hidden = false;
      if (node.rowIndex !== index) {
        node.rowIndex = index;
        node.dataset.index = String(index);
        node.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
      }
      if (node.rowId !== row.id) fillRow(node, row);
      const selected = row.id === this.selectedId;
      if (node.selected !== selected) {
        node.selected = selected;
        node.classList.toggle("selected", selected);
      }
    }
  }
}

function makeRowElement() {
  const node = el("div", { class: "row", role: "row" });
  for (const name of ["time", "peers", "proto", "method", "path", "status", "elapsed", "node"]) {
    node.append(el("span", { class: `c-${name}` }));
  }
  return node;
}

function fillRow(node, row) {
  node.rowId = row.id;
  node.dataset.id = row.id; // an attribute value: text, never parsed as markup
  const [time, peers, proto, method, path, status, elapsed, nodeName] = node.children;
  time.textContent = row.time;
  peers.textContent = row.peers;
  peers.title = row.peers;
  proto.textContent = row.proto;
  method.textContent = row.method;
  path.textContent = row.path;
  path.title = row.url;
  status.textContent = row.status === null ? "–" : String(row.status);
  status.className = `c-status status-${row.status === null ? 0 : Math.floor(row.status / 100)}`;
  elapsed.textContent = row.elapsed === null ? "" : String(row.elapsed);
  nodeName.textContent = row.node;
  node.classList.toggle("has-error", row.error !== null);
  node.title = row.error ? `error: ${row.error}` : "";
}
