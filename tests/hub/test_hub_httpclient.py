"""The hub's HTTP client against scripted answers: what it sends, the bodies it reads, its bounds,
and what it says when a worker answers something else."""

from __future__ import annotations

import pytest
import trio

from kshark.hub.httpclient import MAX_HEAD, UpstreamError, http_get
from tests.support.hub import scripted_server

BUDGET = 10


async def _get(nursery, answer: bytes, **kwargs) -> tuple[int, dict[str, str], bytes, bytes]:
    requests: list[bytes] = []
    port = await nursery.start(scripted_server, lambda head: answer, requests)
    response = await http_get(f"127.0.0.1:{port}", "/status?x=1", **kwargs)
    body = await response.read(1 << 20)
    return response.status, response.headers, body, requests[0]


async def test_the_request_and_three_ways_a_body_ends(nursery):
    with trio.fail_after(BUDGET):
        status, headers, body, request = await _get(
            nursery,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloIGNORED",
            token="t",
        )
        assert (status, headers["x-a"], body) == (200, "b", b"hello")
        lines = request.decode().split("\r\n")
        assert lines[0] == "GET /status?x=1 HTTP/1.1"
        assert {"connection: close", "authorization: bearer t"} <= {x.lower() for x in lines}
        _, _, body, _ = await _get(
            nursery,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        assert body == b"abcde"
        _, headers, body, _ = await _get(nursery, b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        assert body == b"until the end"


async def test_the_head_bound_is_exact(nursery):
    def answer(head_size: int) -> bytes:
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: "
        return start + b"p" * (head_size - len(start) - 4) + b"\r\n\r\nok"

    with trio.fail_after(BUDGET):
        assert (await _get(nursery, answer(MAX_HEAD)))[2] == b"ok"
        with pytest.raises(UpstreamError, match=f"response head larger than {MAX_HEAD} bytes"):
            await _get(nursery, answer(MAX_HEAD + 1))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "closed the connection without answering"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "did not answer in HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection mid-body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed body"),
    ],
)
async def test_what_is_not_a_whole_answer_says_so(nursery, answer, message):
    with trio.fail_after(BUDGET), pytest.raises(UpstreamError, match=message):
        await _get(nursery, answer)
