// The entry pane: the whole entry, fetched from /item on click (the list holds only its
// columns). Every value is captured data and is rendered as text.

import { base64Bytes, renderBody } from "./body.js";
import { el, fill, formatBytes, peerLabel } from "./dom.js";

const ERROR_MEANING = {
  "pair-not-found": "a request without its response (or a response without its request)",
  dissection: "the message is malformed: it could not be parsed as HTTP",
  timeout: "the exchange did not complete in time",
  connection: "the connection was reset or closed in the middle of a message",
};

function table(pairs) {
  const rows = [];
  for (const [name, value] of pairs) {
    rows.push(el("tr", null, el("td", { text: name }), el("td", { text: value })));
  }
  if (!rows.length) return el("p", { class: "muted", text: "none" });
  return el("table", { class: "kv" }, el("tbody", null, ...rows));
}

function objectPairs(obj) {
  const out = [];
  if (!obj || typeof obj !== "object") return out;
  for (const [name, value] of Object.entries(obj)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      out.push([name, one === null || one === undefined ? "" : String(one)]);
    }
  }
  return out;
}

function headerValue(headers, name) {
  for (const [key, value] of Object.entries(headers || {})) {
    if (key.toLowerCase() === name) return String(value);
  }
  return null;
}

function bodySection(label, bytes, mime, sizes, cls) {
  const view = renderBody(bytes, mime);
  const parts = [`${view.note}`];
  if (mime) parts.push(mime);
  parts.push(...sizes);
  return [
    el("h3", { text: label }),
    el("p", { class: "body-meta", text: parts.join(" · ") }),
    view.kind === "empty" ? null : el("pre", { class: `body ${cls}`, dataset: { kind: view.kind }, text: view.text }),
  ];
}

function requestBody(request) {
  const post = request.postData;
  if (!post || typeof post.text !== "string") return { bytes: null, mime: null };
  if (post.encoding === "base64") return { bytes: base64Bytes(post.text), mime: post.mimeType };
  return { bytes: new TextEncoder().encode(post.text), mime: post.mimeType };
}

export function curlCommand(entry) {
  const request = entry.request || {};
  const headers = request.headers || {};
  const host = headerValue(headers, "host") || `${entry.dst?.ip}:${entry.dst?.port}`;
  const target = request.url || request.path || "/";
  const url = /^https?:\/\//.test(target) ? target : `${entry.tls ? "https" : "http"}://${host}${target}`;
  const q = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;
  const parts = ["curl"];
  if (request.method && request.method !== "GET") parts.push("-X", q(request.method));
  parts.push(q(url));
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === "host" || lower === "content-length") continue;
    parts.push("-H", q(`${name}: ${value}`));
  }
  const post = request.postData;
  if (post && typeof post.text === "string" && post.text.length) {
    if (post.encoding === "base64") {
      return `printf %s ${q(post.text)} | base64 -d | ${parts.join(" ")} --data-binary @-`;
    }
    parts.push("--data-binary", q(post.text));
  }
  return parts.join(" ");
}

export class DetailPane {
  constructor(node, api, { onCopy, onClose, onProblem }) {
    this.node = node;
    this.api = api;
    this.onCopy = onCopy;
    this.onClose = onClose;
    this.onProblem = onProblem;
    this.current = null;
    this.seq = 0;
  }

  hide() {
    this.node.hidden = true;
    this.current = null;
    fill(this.node);
  }

  async show(row) {
    const seq = ++this.seq;
    this.node.hidden = false;
    fill(this.node, el("p", { class: "muted", text: `Loading ${row.id}…` }));
    let entry;
    try {
      entry = await this.api.json(this.api.itemPath(row));
    } catch (err) {
      if (seq !== this.seq) return;
      fill(this.node, el("p", { class: "problem", text: `Could not load ${row.id}: ${err.message}` }));
      return;
    }
    if (seq !== this.seq) return; // another row was clicked meanwhile
    this.current = entry;
    this.render(entry);
  }

  render(entry) {
    const request = entry.request || {};
    const response = entry.response || {};
    const hasResponse = Object.keys(response).length > 0;
    const title = `${request.method ?? ""} ${request.url ?? request.path ?? ""}`;
    const actions = el(
      "div",
      { class: "detail-actions" },
      el("button", { type: "button", id: "download-pcap", text: "Download pcap", onclick: () => this.downloadPcap(entry) }),
      el("button", { type: "button", id: "copy-json", text: "Copy JSON", onclick: () => this.onCopy(JSON.stringify(entry, null, 2)) }),
      el("button", { type: "button", id: "copy-curl", text: "Copy as curl", onclick: () => this.onCopy(curlCommand(entry)) }),
      el("button", { type: "button", class: "close", text: "Close", onclick: () => this.onClose() }),
    );
    const error = entry.error && entry.error.type
      ? el("p", { class: "entry-error", id: "entry-error" },
          `${entry.error.type}: ${ERROR_MEANING[entry.error.type] ?? "see the message"}`,
          entry.error.msg ? ` — ${entry.error.msg}` : "")
      : null;
    const summary = table([
      ["id", entry.id ?? ""],
      ["source", peerLabel(entry.src)],
      ["destination", peerLabel(entry.dst)],
      ["node", `${entry.node?.name ?? ""} (${entry.node?.ip ?? ""})`],
      ["started", entry.startTime ?? ""],
      ["elapsed", `${entry.elapsedTime ?? "?"} ms`],
      ["protocol", entry.protocol?.longName ?? entry.protocol?.abbr ?? ""],
      ["request size", formatBytes(entry.requestSize)],
      ["response size", formatBytes(entry.responseSize)],
      ["connection", `${entry.worker ?? ""}/${entry.stream ?? ""}`],
    ]);

    const req = requestBody(request);
    const requestParts = [
      el("h3", { text: "Request" }),
      el("p", { class: "startline", id: "request-line", text: `${request.method ?? ""} ${request.url ?? ""} ${request.httpVersion ?? ""}` }),
      el("h3", { text: "Request headers" }),
      table(objectPairs(request.headers)),
      el("h3", { text: "Query string" }),
      table(objectPairs(request.queryString)),
      el("h3", { text: "Request cookies" }),
      table(objectPairs(request.cookies)),
      ...bodySection("Request body", req.bytes, req.mime, [`${formatBytes(request.bodySize)} on the wire`], "request-body"),
    ];

    let responseParts;
    if (!hasResponse) {
      responseParts = [el("h3", { text: "Response" }), el("p", { class: "muted", text: "no response was captured" })];
    } else {
      const content = response.content || {};
      const bytes = typeof content.text === "string" ? base64Bytes(content.text) : new Uint8Array(0);
      const encoding = headerValue(response.headers, "content-encoding");
      const sizes = [`${formatBytes(content.size)} decoded`, `${formatBytes(response.bodySize)} captured${encoding ? ` (${encoding})` : ""}`];
      responseParts = [
        el("h3", { text: "Response" }),
        el("p", { class: "startline", id: "response-line", text: `${response.httpVersion ?? ""} ${response.status ?? ""} ${response.statusText ?? ""}` }),
        el("h3", { text: "Response headers" }),
        table(objectPairs(response.headers)),
        el("h3", { text: "Response cookies" }),
        table(objectPairs(response.cookies)),
        ...bodySection("Response body", bytes, content.mimeType, sizes, "response-body"),
      ];
    }
    fill(this.node, el("h2", { id: "detail-title", text: title }), actions, error, summary, ...requestParts, ...responseParts);
  }

  async downloadPcap(entry) {
    try {
      await this.api.download(this.api.pcapPath(entry), null, String(entry.stream || "connection.pcap"));
    } catch (err) {
      this.onProblem(`pcap download failed: ${err.message}`);
    }
  }
}
