"""The summary form of an entry (ENTRY.md, "Summary form (/api/ws)"): what a list of
entries shows, with the KFL queries that select the same method, path or status.
"""

from __future__ import annotations

from typing import Any

__all__ = ["summarize"]


def _kfl_string(value: str) -> str:
    """A KFL string literal (KFL.md: \\" \\\\ \\n \\t \\r \\uXXXX escapes)."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if any(c < " " or c == "\x7f" for c in out):
        out = "".join(f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else c for c in out)
    return f'"{out}"'


def _names(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata") or {}
    return {"metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", "")}}


def _resolution_summary(res: Any) -> Any:
    """src/dst with pod/service/endpointSlice cut to names (Kubeshark's ResolutionSummary)."""
    if not isinstance(res, dict):
        return res  # e.g. "[REDACTED]": a summary shows what the stream's filter left
    out = dict(res)
    pod = res.get("pod")
    if isinstance(pod, dict):
        meta = pod.get("metadata") or {}
        out["pod"] = {
            "metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", "")},
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName", "")},
            "status": {"hostIp": (pod.get("status") or {}).get("hostIP", "")},
        }
    else:
        out["pod"] = None
    out["service"] = _names(res.get("service"))
    out["endpointSlice"] = _names(res.get("endpointSlice"))
    return out


def _dns_summary(
    request: dict[str, Any], response: dict[str, Any]
) -> tuple[str, str, str, str, int, str]:
    """DNS: summary = the first question's name (as Kubeshark), method = its type ("A",
    "AAAA": Kubeshark shows the opcode, which is "Query" on nearly every entry), status = the
    response code (0 NOERROR, 3 NXDOMAIN; Kubeshark shows 0 always). A lone response takes
    its question from the response."""
    section, questions = "request", request.get("questions")
    if not isinstance(questions, list) or not questions:
        section, questions = "response", response.get("questions")
    first = questions[0] if isinstance(questions, list) and questions else {}
    if not isinstance(first, dict):
        first = {}
    name, qtype = first.get("name", ""), first.get("type", "")
    name = name if isinstance(name, str) else ""
    qtype = qtype if isinstance(qtype, str) else ""
    rcode = response.get("rcode")
    if isinstance(rcode, int) and not isinstance(rcode, bool):
        status, status_q = rcode, f"response.rcode == {rcode}"
    else:
        status, status_q = 0, ""
    return (
        qtype,
        f"{section}.questions[0].type == {_kfl_string(qtype)}",
        name,
        f"{section}.questions[0].name == {_kfl_string(name)}",
        status,
        status_q,
    )


def summarize(entry: dict[str, Any]) -> dict[str, Any]:
    """The summary record of ENTRY.md ("Summary form (/api/ws)") for a full entry.

    The entry may have been redacted first (`redact("request")` leaves a string where an object
    was), so every part is read defensively: a summary never fails because of a filter.
    """
    request = entry.get("request")
    response = entry.get("response")
    if not isinstance(request, dict):
        request = {}
    if not isinstance(response, dict):
        response = {}
    protocol = entry.get("protocol")
    if isinstance(protocol, dict) and protocol.get("name") == "dns":
        method, method_q, summary, summary_q, status, status_q = _dns_summary(request, response)
    else:
        method = request.get("method", "")
        summary = request.get("path", "")
        status = response.get("status", 0)
        method_q = f"request.method == {_kfl_string(method)}"
        summary_q = f"request.path == {_kfl_string(summary)}"
        status_q = f"response.status == {status}"
    return {
        "dst": _resolution_summary(entry.get("dst")),
        "elapsedTime": entry.get("elapsedTime"),
        "error": entry.get("error"),
        "failed": entry.get("failed"),
        "id": entry.get("id"),
        "index": entry.get("index"),
        "method": method,
        "methodQuery": method_q,
        "node": entry.get("node"),
        "outgoing": entry.get("outgoing"),
        "passed": entry.get("passed"),
        "proto": entry.get("protocol"),
        "record": entry.get("record"),
        "requestSize": entry.get("requestSize"),
        "responseSize": entry.get("responseSize"),
        "src": _resolution_summary(entry.get("src")),
        "status": status,
        "statusQuery": status_q,
        "stream": entry.get("stream"),
        "summary": summary,
        "summaryQuery": summary_q,
        "timestamp": entry.get("timestamp"),
        "tls": entry.get("tls"),
        "worker": entry.get("worker"),
    }
