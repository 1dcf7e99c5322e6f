"""The shared listener: plain HTTP and websockets on one port, auth, bounds, failures contained."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from kshark.api.httpserver import Request, Response, ServerLimits, serve, text_response
from tests.support.rawhttp import get, http_request, read_reply

BUDGET = 10


class EchoApp:
    """A tiny App: /hello answers, /boom raises, /ws echoes one message, /ws-boom raises."""

    ws_paths = frozenset({"/ws", "/ws-boom"})

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def handle_http(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/hello":
            return text_response(f"hello {request.query.get('name', '')}")
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/body":
            return text_response(f"got {len(request.body)} bytes")
        if request.path == "/stream":
            return Response(stream=_pieces(b"one,", b"two"))
        return text_response("not here", 404)

    async def handle_ws(self, request, ws) -> None:
        if request.path == "/ws-boom":
            raise RuntimeError("ws handler bug")
        message = await ws.get_message()
        await ws.send_message(f"echo {message}")


async def _pieces(*parts: bytes):
    for part in parts:
        yield part


async def start(nursery, app=None, **kwargs):
    app = app or EchoApp()
    port = await nursery.start(
        lambda task_status: serve(app, "127.0.0.1", 0, task_status=task_status, **kwargs)
    )
    return app, port


async def test_port_zero_gives_a_real_port_and_http_works(nursery):
    with trio.fail_after(BUDGET):
        app, port = await start(nursery)
        assert port > 0
        reply = await get(port, "/hello?name=kshark&name=other")
        assert reply.status == 200
        assert reply.body == b"hello kshark"
        assert reply.headers["content-length"] == str(len(reply.body))
        assert app.requests[0].query == {"name": "kshark"}
        assert app.requests[0].headers["host"] == f"127.0.0.1:{port}"


async def test_keep_alive_serves_several_requests_on_one_connection(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for name in ("a", "b", "c"):
                await stream.send_all(
                    f"GET /hello?name={name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                reply = await read_reply(stream)
                assert (reply.status, reply.body) == (200, f"hello {name}".encode())
            # Pipelined: two requests in one write, two answers in order.
            await stream.send_all(
                b"GET /hello?name=p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /hello?name=p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 2
        assert data.index(b"hello p1") < data.index(b"hello p2")


async def test_unknown_path_is_404_and_head_has_no_body(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        assert (await get(port, "/nowhere")).status == 404
        reply = await http_request(
            port, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert reply.status == 200
        assert reply.headers["content-length"] == str(len(b"hello "))


async def test_request_body_is_read_within_bounds(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery, limits=ServerLimits(max_body=100))
        ok = await http_request(
            port,
            b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        assert (ok.status, ok.body) == (200, b"got 5 bytes")
        big = await http_request(
            port, b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
        )
        assert big.status == 413
        assert big.headers["connection"] == "close"


async def test_head_over_16_kib_is_431_and_closed(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        raw = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n"
        reply = await http_request(port, raw)
        assert reply.status == 431
        assert reply.headers["connection"] == "close"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /hello HTTP/1.1 extra\r\n\r\n",
        b"GET hello HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nBad:\x01header\r\n\r\n",
        b"GET /hello HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host (RFC 9112 §3.2: 400)
        b"GET /hello HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400(nursery, raw):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        reply = await http_request(port, raw)
        assert reply.status == 400
        assert reply.headers["connection"] == "close"


async def test_other_http_versions_get_505(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        reply = await http_request(port, b"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n")
        assert reply.status == 505


async def test_lenient_where_rfc_9112_asks_it(nursery):
    """Blank lines before a request line are skipped (§2.2); an obsolete folded header line is
    joined to its header with a space (§5.2, h11's choice of the two the RFC allows)."""
    with trio.fail_after(BUDGET):
        app, port = await start(nursery)
        reply = await http_request(
            port, b"\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n"
        )
        assert reply.status == 200
        assert app.requests[0].headers["x-long"] == "a b"


async def test_silent_client_is_dropped_after_the_head_timeout(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery, limits=ServerLimits(head_timeout=0.2))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /hel")
            assert await stream.receive_some(100) == b""  # closed by the server


async def test_handler_failure_is_500_and_the_server_goes_on(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        reply = await get(port, "/boom")
        assert reply.status == 500
        assert (await get(port, "/hello")).status == 200


async def test_websocket_and_http_share_the_port(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "echo hi"
        assert (await get(port, "/hello")).status == 200


async def test_websocket_handler_failure_closes_1011_and_the_server_goes_on(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws-boom") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason.code == 1011
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message("again")
            assert await ws.get_message() == "echo again"


async def test_upgrade_to_a_plain_path_is_plain_http(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/elsewhere"):
                pass
        assert rejected.value.status_code == 404


async def test_plain_get_to_a_websocket_path_is_426(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        assert (await get(port, "/ws")).status == 426


async def test_token_required_for_http_and_websocket(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery, token="s3cret")
        assert (await get(port, "/hello")).status == 401
        assert (await get(port, "/hello", {"Authorization": "Bearer wrong"})).status == 401
        assert (await get(port, "/hello?token=wrong")).status == 401
        reply = await get(port, "/hello")
        assert reply.headers["www-authenticate"] == "Bearer"
        assert (await get(port, "/hello", {"Authorization": "Bearer s3cret"})).status == 200
        assert (await get(port, "/hello?token=s3cret")).status == 200

        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws"):
                pass
        assert rejected.value.status_code == 401
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?token=s3cret") as ws:
            await ws.send_message("in")
            assert await ws.get_message() == "echo in"
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}/ws", extra_headers=[(b"Authorization", b"Bearer s3cret")]
        ) as ws:
            await ws.send_message("in")
            assert await ws.get_message() == "echo in"


async def test_connections_past_the_limit_get_503(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery, limits=ServerLimits(max_connections=1))
        holder = await trio.open_tcp_stream("127.0.0.1", port)
        async with holder:
            await holder.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_reply(holder)).status == 200  # the first connection is served
            assert (await get(port, "/hello")).status == 503
        # Once it is gone (the server notices asynchronously), new connections are served again.
        while (reply := await get(port, "/hello")).status == 503:  # noqa: ASYNC110
            await trio.sleep(0.01)
        assert reply.status == 200


async def test_the_head_bound_is_exact_even_when_the_head_comes_in_one_write(nursery):
    """A head of max_head bytes is served, one byte more is 431, whatever the reads bring."""
    with trio.fail_after(BUDGET):
        _, port = await start(nursery, limits=ServerLimits(max_head=300))

        def head(size: int) -> bytes:
            start = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
            return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"

        assert len(head(300)) == 300
        assert (await http_request(port, head(300))).status == 200
        assert (await http_request(port, head(301))).status == 431


async def test_a_handshake_wsproto_refuses_gets_its_answer_and_the_server_goes_on(nursery):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        reply = await http_request(
            port,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        assert reply.status == 426
        assert reply.headers["sec-websocket-version"] == "13"
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message("still")
            assert await ws.get_message() == "echo still"


async def test_a_body_of_unknown_length_is_chunked_for_1_1_and_ends_with_the_connection_for_1_0(
    nursery,
):
    with trio.fail_after(BUDGET):
        _, port = await start(nursery)
        reply = await http_request(
            port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert reply.headers["transfer-encoding"] == "chunked"
        assert (reply.chunks, reply.body) == ((4, 3), b"one,two")  # one chunk per part sent
        # HTTP/1.0 knows no chunks: the body is what comes before the server closes.
        reply = await http_request(port, b"GET /stream HTTP/1.0\r\n\r\n")
        assert "transfer-encoding" not in reply.headers
        assert reply.headers["connection"] == "close"
        assert reply.body == b"one,two"


async def test_a_token_beyond_ascii_is_accepted_as_utf8_and_as_latin1(nursery):
    """curl and the hub send a header's text as UTF-8; Python's http.client as latin-1 (and a
    browser's fetch would, below U+0100). Either is the token; other bytes are not."""
    with trio.fail_after(BUDGET):
        _, port = await start(nursery, token="tøken")

        async def with_auth(value: bytes) -> int:
            head = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            return (
                await http_request(port, head + b"Authorization: " + value + b"\r\n\r\n")
            ).status

        assert await with_auth("Bearer tøken".encode()) == 200
        assert await with_auth("Bearer tøken".encode("latin-1")) == 200
        assert await with_auth(b"Bearer t\xc3\xb8ke") == 401
        assert await with_auth(b"Bearer t\xf8ke") == 401
        _, port = await start(nursery, token="€-token")
        assert await with_auth("Bearer €-token".encode()) == 200
        assert await with_auth(b"Bearer ?-token") == 401
