// The API the page uses is the one every client uses (docs/api.md, docs/hub.md): /version,
// /status, /query/validate, /item, /pcaps, /api/har, /api/pcap and the /api/wsFull stream.
// URLs are relative to the page, so the dashboard also works behind a proxy under a path prefix.
//
// The token (servers started with --token) is asked for once and kept in sessionStorage, for
// this tab only. It goes in an Authorization header on requests, and as a websocket subprotocol
// (`kshark.bearer.<base64url>`) on the stream, since a page cannot set headers on a websocket.
// It is never put into a URL: URLs end up in logs, history and in links people share.

const TOKEN_KEY = "kshark.token";

export class AuthError extends Error {
  constructor() {
    super("the server wants a token");
  }
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `text`'s UTF-8 bytes, one character each: what a header value or btoa() carries as bytes. */
function utf8Binary(text) {
  let binary = "";
  for (const b of new TextEncoder().encode(text)) binary += String.fromCharCode(b);
  return binary;
}

function base64url(text) {
  return btoa(utf8Binary(text)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export class Api {
  constructor() {
    this.base = new URL(".", location.href);
    this.token = sessionStorage.getItem(TOKEN_KEY);
    this.role = null; // "hub" | "worker", from /version
    this.version = null;
  }

  setToken(token) {
    this.token = token || null;
    if (this.token) sessionStorage.setItem(TOKEN_KEY, this.token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  url(path, params) {
    const url = new URL(path, this.base);
    for (const [key, value] of Object.entries(params || {})) url.searchParams.set(key, value);
    return url;
  }

  headers() {
    // As UTF-8 bytes, as curl sends them: fetch() would send a character up to U+00FF as one
    // byte and refuse any above.
    return this.token ? { Authorization: `Bearer ${utf8Binary(this.token)}` } : {};
  }

  async get(path, params) {
    const response = await fetch(this.url(path, params), {
      headers: this.headers(),
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new AuthError();
    return response;
  }

  async json(path, params) {
    const response = await this.get(path, params);
    let body = null;
    try {
      body = await response.json();
    } catch {
      throw new HttpError(response.status, `${path}: not JSON (status ${response.status})`);
    }
    if (!response.ok) {
      throw new HttpError(response.status, body?.error?.message ?? `${path}: ${response.status}`);
    }
    return body;
  }

  async hello() {
    const version = await this.json("version");
    this.role = version.role === "hub" ? "hub" : "worker";
    this.version = version.version;
    return version;
  }

  openSocket(path) {
    const url = this.url(path);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const protocols = ["kshark"];
    if (this.token) protocols.push(`kshark.bearer.${base64url(this.token)}`);
    return new WebSocket(url, protocols);
  }

  /** The /item URL path of an entry (the hub names the worker, the worker only the entry). */
  itemPath(entry) {
    const short = entry.id.slice(entry.id.lastIndexOf("/") + 1);
    if (this.role === "hub") return `item/${encodeURIComponent(entry.worker)}/${encodeURIComponent(short)}`;
    return `item/${encodeURIComponent(short)}`;
  }

  /** The /pcaps URL path of an entry's connection. */
  pcapPath(entry) {
    if (this.role === "hub") return `pcaps/${encodeURIComponent(entry.worker)}/${encodeURIComponent(entry.stream)}`;
    return `pcaps/${encodeURIComponent(entry.stream)}`;
  }

  /**
   * Save what `path` answers as a file. Without a token a plain link does it (the browser
   * streams it to disk); with one, the body is fetched with the header and handed over as a blob
   * (held in memory: exports are bounded, see docs/dashboard.md).
   */
  async download(path, params, filename) {
    const url = this.url(path, params);
    if (!this.token) {
      clickLink(url.href, filename);
      return;
    }
    const response = await this.get(path, params);
    if (!response.ok) throw new HttpError(response.status, `${path}: ${response.status}`);
    const blob = await response.blob();
    const objectUrl = URL.createObjectURL(blob);
    try {
      clickLink(objectUrl, filename);
    } finally {
      setTimeout(() => URL.revokeObjectURL(objectUrl), 60_000);
    }
  }
}

function clickLink(href, filename) {
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
}
