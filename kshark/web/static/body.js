// Bodies as the entry holds them (ENTRY.md): a response's `content.text` is base64 of the body
// after de-chunking and content decoding (gzip, deflate, br, zstd: done by the worker); a
// request's `postData.text` is text, or base64 with "encoding": "base64". Shown as pretty JSON,
// as text, or as a hex dump when the bytes are not UTF-8 text — always as text in a <pre>.

// Bytes of a binary body shown as hex; the rest is counted, not shown.
export const HEX_LIMIT = 64 * 1024;

export function base64Bytes(text) {
  try {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return null;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function looksJson(mime, text) {
  if (/json/i.test(mime || "")) return true;
  const t = text.trimStart();
  return t.startsWith("{") || t.startsWith("[");
}

/** bytes (Uint8Array) → {kind: "empty" | "json" | "text" | "binary", text, note} */
export function renderBody(bytes, mime) {
  if (!bytes || bytes.length === 0) return { kind: "empty", text: "", note: "no body" };
  let text = null;
  try {
    text = utf8.decode(bytes);
  } catch {
    text = null;
  }
  if (text !== null && !text.includes("\u0000")) {
    if (looksJson(mime, text)) {
      try {
        return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2), note: "JSON" };
      } catch {
        // not JSON after all: shown as text
      }
    }
    return { kind: "text", text, note: "text" };
  }
  return { kind: "binary", text: hexDump(bytes), note: "binary, shown as hex" };
}

export function hexDump(bytes) {
  const shown = Math.min(bytes.length, HEX_LIMIT);
  const lines = [];
  for (let off = 0; off < shown; off += 16) {
    const chunk = bytes.subarray(off, Math.min(off + 16, shown));
    let hex = "";
    let ascii = "";
    for (let i = 0; i < 16; i++) {
      if (i < chunk.length) {
        hex += chunk[i].toString(16).padStart(2, "0") + (i === 7 ? "  " : " ");
        ascii += chunk[i] >= 0x20 && chunk[i] < 0x7f ? String.fromCharCode(chunk[i]) : ".";
      } else {
        hex += i === 7 ? "    " : "   ";
      }
    }
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex} |${ascii}|`);
  }
  if (bytes.length > shown) lines.push(`… ${bytes.length - shown} more bytes not shown`);
  return lines.join("\n");
}
