// The filter bar: KFL checked as the user types (GET /query/validate: the server's own parser, so
// the page never disagrees with the stream), the error shown with its column marked, Enter to
// apply. The applied query lives in the page URL (?q=…) so a view can be shared; recent queries
// are remembered in this browser (localStorage), examples and macros are one click away.

import { $, el, fill } from "./dom.js";

export const EXAMPLES = [
  "",
  "response.status >= 400",
  "response.status >= 500",
  'request.method == "POST"',
  'request.path.startsWith("/api")',
  "elapsedTime > 100",
  'request.headers["content-type"] == r"json"',
  "timestamp >= minutes(-5)",
  "error != null",
  'http and !(response.status == 200) and limit(100)',
];
export const MACROS = ["http", "http2", "grpc", "gql", "amqp", "kafka", "redis", "dns", "tcp", "udp", "tls"];
const HISTORY_KEY = "kshark.history";
const HISTORY_LIMIT = 20;
const VALIDATE_DELAY_MS = 150;

/** "1:19: message" → {line: 1, column: 19, text: "message"} (null when there is no position). */
export function parsePosition(message) {
  const m = /^(\d+):(\d+):\s*(.*)$/s.exec(message || "");
  return m ? { line: Number(m[1]), column: Number(m[2]), text: m[3] } : null;
}

export class FilterBar {
  constructor(api, onApply) {
    this.api = api;
    this.onApply = onApply;
    this.input = $("filter");
    this.errorBox = $("filter-error");
    this.applied = null;
    this.checkSeq = 0;
    this.timer = null;
    this.input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.check(), VALIDATE_DELAY_MS);
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.apply(this.input.value);
      }
    });
    $("apply").addEventListener("click", () => this.apply(this.input.value));
    window.addEventListener("popstate", () => this.apply(queryFromUrl(), { push: false }));
    this.renderSuggestions();
  }

  /** Check `text` with the server; shows or clears the error. Resolves to the answer. */
  async check(text = this.input.value) {
    const seq = ++this.checkSeq;
    let answer;
    try {
      answer = await this.api.json("query/validate", { q: text });
    } catch (err) {
      return { valid: false, message: err.message, failed: true };
    }
    if (seq === this.checkSeq && text === this.input.value) this.show(text, answer);
    return answer;
  }

  show(text, answer) {
    if (answer.valid) {
      this.input.removeAttribute("aria-invalid");
      this.errorBox.hidden = true;
      return;
    }
    this.input.setAttribute("aria-invalid", "true");
    const pos = parsePosition(answer.message);
    const query = $("filter-error-query");
    if (pos) {
      const lines = text.split("\n");
      const line = Array.from(lines[pos.line - 1] ?? ""); // code points, as the server counts
      const at = Math.max(0, pos.column - 1);
      query.dataset.line = String(pos.line);
      query.dataset.column = String(pos.column);
      fill(
        query,
        line.slice(0, at).join(""),
        el("mark", { text: line.slice(at, at + 1).join("") || " " }),
        line.slice(at + 1).join(""),
        el("span", { class: "caret", text: `${" ".repeat(at)}^ column ${pos.column}` }),
      );
      query.hidden = false;
    } else {
      delete query.dataset.line;
      delete query.dataset.column;
      fill(query);
      query.hidden = true;
    }
    $("filter-error-message").textContent = answer.message;
    this.errorBox.hidden = false;
  }

  async apply(text, { push = true } = {}) {
    this.input.value = text;
    const answer = await this.check(text);
    if (!answer.valid) return false;
    if (push && text !== queryFromUrl()) {
      const url = new URL(location.href);
      if (text) url.searchParams.set("q", text);
      else url.searchParams.delete("q");
      history.pushState(null, "", url);
    }
    remember(text);
    this.renderSuggestions();
    this.applied = text;
    this.onApply(text);
    return true;
  }

  renderSuggestions() {
    const pick = (text) => () => {
      $("suggestions").open = false;
      this.apply(text);
    };
    const insert = (word) => () => {
      $("suggestions").open = false;
      const v = this.input.value.trim();
      this.input.value = v ? `${v} and ${word}` : word;
      this.input.focus();
      this.check();
    };
    fill($("examples"), ...EXAMPLES.map((q) => el("li", null, el("button", { type: "button", text: q || "(everything)", onclick: pick(q) }))));
    fill($("macros"), ...MACROS.map((m) => el("li", null, el("button", { type: "button", text: m, onclick: insert(m) }))));
    const recent = loadHistory();
    fill(
      $("history"),
      ...(recent.length
        ? recent.map((q) => el("li", null, el("button", { type: "button", text: q || "(everything)", onclick: pick(q) })))
        : [el("li", { class: "muted", text: "none yet" })]),
    );
  }
}

export function queryFromUrl() {
  return new URL(location.href).searchParams.get("q") ?? "";
}

function loadHistory() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list.filter((q) => typeof q === "string") : [];
  } catch {
    return [];
  }
}

function remember(text) {
  const list = [text, ...loadHistory().filter((q) => q !== text)].slice(0, HISTORY_LIMIT);
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(list));
  } catch {
    // storage full or disabled: history is a convenience
  }
}
