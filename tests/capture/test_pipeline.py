"""capture/pipeline.py: what the whole chain counts and reports, on crafted conversations."""

from __future__ import annotations

from flows import TcpFlow, run


def exchange(flow: TcpFlow, request: bytes, response: bytes) -> None:
    flow.client_sends(request)
    flow.ack(False)
    flow.server_sends(response)
    flow.ack(True)


def test_every_entry_with_an_error_is_counted_also_undecodable_content() -> None:
    flow = TcpFlow()
    flow.handshake()
    exchange(
        flow,
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    bad = b"not gzip at all"
    exchange(
        flow,
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(bad), bad),
    )
    exchange(
        flow,
        b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    )
    flow.close()
    out, pipeline = run(flow.frames)
    errors = [e["error"] for e in out.entries]
    assert errors[0] is None and errors[2] is None
    assert errors[1]["type"] == "dissection" and "not decoded" in errors[1]["msg"]
    stats = pipeline.stats()
    assert stats["entries"] == 3
    assert stats["entries_with_error"] == 1 == sum(1 for e in errors if e is not None)
    assert stats["errors_dissection"] == 1
