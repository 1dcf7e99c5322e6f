// DOM helpers. Everything captured (paths, headers, bodies, names) is untrusted: it reaches the
// page only as text (textContent, Text nodes, element properties such as title), never as HTML.
// This module is the only place elements are made, and it has no way to parse markup.

/**
 * el("td", {class: "x", title: t}, "text", child) → a new element. Strings become Text nodes.
 * Attribute names come from our code only; values may be captured text (never put into href,
 * src or on* attributes: those are set nowhere from captured data).
 */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "title") node.title = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child); // a string becomes a Text node, never markup
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

/** Replace every child of `node`. */
export function fill(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== undefined && c !== null && c !== false));
}

export function formatBytes(n) {
  if (typeof n !== "number" || n < 0) return "?";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatCount(n) {
  return n.toLocaleString("en-US");
}

/** "HH:MM:SS.mmm" local time of a millisecond timestamp. */
export function formatTime(ms) {
  if (typeof ms !== "number") return "";
  const d = new Date(ms);
  const p = (v, w = 2) => String(v).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A peer as people read it: the resolved name (namespace/name) when there is one, else ip:port. */
export function peerLabel(peer) {
  if (!peer) return "?";
  if (peer.name) return peer.namespace ? `${peer.namespace}/${peer.name}` : peer.name;
  const ip = peer.ip ?? "?";
  const port = peer.port ?? "";
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}
