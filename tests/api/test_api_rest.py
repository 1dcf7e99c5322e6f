"""The worker's REST routes: what curl, a browser or Prometheus gets."""

from __future__ import annotations

import io
import re
import socket

import dpkt
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from capture.pipeline import Output
from tests.support.api import FAKE_STATS, make_entry, start_worker_api, write_entries
from tests.support.rawhttp import get, http_request, loads, read_reply, wait_until

BUDGET = 10


def tcp_frames(client_port: int, request: bytes, response: bytes) -> list[bytes]:
    """Ethernet frames of one small HTTP exchange (handshake, data, FIN), client → 10.0.53.101:80."""
    c_ip, s_ip = socket.inet_aton("10.0.53.77"), socket.inet_aton("10.0.53.101")
    out = []

    def frame(src, dst, sport, dport, flags, seq, ack, data=b""):
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, data=data)
        ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, data=tcp)
        ip.len = len(ip)
        eth = dpkt.ethernet.Ethernet(
            src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02", data=ip
        )
        return bytes(eth)

    syn, ack = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK
    out.append(frame(c_ip, s_ip, client_port, 80, syn, 1000, 0))
    out.append(frame(s_ip, c_ip, 80, client_port, syn | ack, 5000, 1001))
    out.append(frame(c_ip, s_ip, client_port, 80, ack, 1001, 5001))
    out.append(frame(c_ip, s_ip, client_port, 80, ack | dpkt.tcp.TH_PUSH, 1001, 5001, request))
    out.append(
        frame(
            s_ip, c_ip, 80, client_port, ack | dpkt.tcp.TH_PUSH, 5001, 1001 + len(request), response
        )
    )
    out.append(
        frame(
            c_ip,
            s_ip,
            client_port,
            80,
            ack | dpkt.tcp.TH_FIN,
            1001 + len(request),
            5001 + len(response),
        )
    )
    return out


def write_connection(store, client_port: int, t0_ns: int) -> tuple[int, list[tuple[int, bytes]]]:
    """One connection: its packets, its entry, closed. Returns (stream, [(ts_ns, frame)])."""
    stream = store.allocate_stream()
    frames = tcp_frames(
        client_port,
        b"GET /catalogue HTTP/1.1\r\nHost: catalogue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
    )
    packets = [(t0_ns + i * 1_000_123, f) for i, f in enumerate(frames)]
    store.write(
        Output(
            entries=[make_entry(stream, 0, client_port=client_port)],
            packets=[(stream, ts, 1, f) for ts, f in packets],
            closed_streams=[stream],
        )
    )
    return stream, packets


async def test_echo_and_version(api):
    with trio.fail_after(BUDGET):
        echo = await get(api.port, "/echo")
        assert (echo.status, echo.body) == (200, b"It's running.")
        version = loads((await get(api.port, "/version")).body)
        from kshark import __version__

        assert version["version"] == __version__
        assert (await get(api.port, "/api/echo")).body == b"It's running."


async def test_query_validate(api):
    with trio.fail_after(BUDGET):
        ok = await get(api.port, "/query/validate?q=" + "response.status%20%3E%20300%20and%20http")
        assert ok.status == 200
        assert loads(ok.body) == {"valid": True, "message": ""}
        bad = loads((await get(api.port, "/query/validate?q=response.status%20%3D%3D")).body)
        assert bad["valid"] is False
        assert re.match(r"1:\d+: ", bad["message"]), bad
        assert loads((await get(api.port, "/query/validate?q=")).body)["valid"] is True


async def test_item_by_every_stream_spelling(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"path": "/a"}, {"path": "/b"}])
        stream = int(entries[1]["stream"][:12])
        expected = store.entry_bytes(stream, 0)
        for spelling in (f"{stream:012d}.pcap", f"{stream:012d}", str(stream)):
            reply = await get(api.port, f"/item/{spelling}-0")
            assert reply.status == 200, spelling
            assert reply.headers["content-type"] == "application/json"
            assert reply.body == expected
        assert loads(expected)["request"]["path"] == "/b"
        assert (await get(api.port, f"/item/{stream}-1")).status == 404
        assert (await get(api.port, "/item/999999-0")).status == 404


async def test_pcap_download_holds_that_connections_packets(api, store):
    with trio.fail_after(BUDGET):
        stream, packets = write_connection(store, 40001, 1_703_019_067_000_000_000)
        write_connection(store, 40002, 1_703_019_068_000_000_000)  # another connection
        reply = await get(api.port, f"/pcaps/{stream:012d}.pcap")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert reply.headers["content-disposition"] == f'attachment; filename="{stream:012d}.pcap"'
    assert int(reply.headers["content-length"]) == len(reply.body)
    reader = dpkt.pcap.Reader(io.BytesIO(reply.body))
    assert reader.datalink() == dpkt.pcap.DLT_EN10MB
    got = [(ts, bytes(buf)) for ts, buf in reader]
    assert [buf for _, buf in got] == [f for _, f in packets]
    for (ts, _), (ts_ns, _) in zip(got, packets, strict=True):
        assert abs(float(ts) - ts_ns / 1e9) < 1e-6
    ports = {dpkt.ethernet.Ethernet(buf).data.data.sport for _, buf in got}
    assert ports == {40001, 80}


async def test_pcap_download_is_streamed_in_chunks(api, store):
    """A pcap larger than one chunk arrives whole (the server sends it piecewise)."""
    with trio.fail_after(BUDGET):
        stream = store.allocate_stream()
        big = [b"\x00" * 14 + bytes([i % 256]) * 1400 for i in range(300)]  # ~420 KB
        store.write(
            Output(
                entries=[make_entry(stream, 0)],
                packets=[(stream, 1_703_019_067_000_000_000 + i, 1, f) for i, f in enumerate(big)],
                closed_streams=[stream],
            )
        )
        reply = await get(api.port, f"/pcaps/{stream}")
    assert reply.status == 200
    assert [bytes(b) for _, b in dpkt.pcap.Reader(io.BytesIO(reply.body))] == big


@pytest.mark.tools
async def test_pcap_download_opens_in_tshark(api, store, tmp_path):
    with trio.fail_after(BUDGET * 3):
        stream, packets = write_connection(store, 40003, 1_703_019_067_000_000_000)
        reply = await get(api.port, f"/pcaps/{stream}")
        path = tmp_path / "download.pcap"
        path.write_bytes(reply.body)
        result = await trio.run_process(
            [
                "tshark",
                "-n",
                "-r",
                str(path),
                "-T",
                "fields",
                "-e",
                "tcp.srcport",
                "-e",
                "http.request.method",
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
    rows = [line.split("\t") for line in result.stdout.decode().splitlines()]
    assert len(rows) == len(packets)
    assert {r[0] for r in rows} == {"40003", "80"}
    assert ["40003", "GET"] in rows


async def test_missing_pcap_is_404(api, store):
    with trio.fail_after(BUDGET):
        assert (await get(api.port, "/pcaps/4242")).status == 404


@pytest.mark.parametrize(
    "target",
    [
        "/pcaps/../../../../etc/passwd",
        "/pcaps/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/pcaps/%2e%2e/%2e%2e/etc/passwd",
        "/pcaps/1/../../../../etc/passwd",
        "/pcaps//etc/passwd",
        "/pcaps/1%00.pcap",
        "/pcaps/0x1",
        "/pcaps/-1",
        "/pcaps/%D9%A3",  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit, not to us
        "/pcaps/1234567890123",
        "/item/../entries/000000000001_pcap-0_entry.json",
        "/item/..%2Fentries%2F000000000001_pcap-0_entry.json",
        "/item/000000000001_pcap-0_entry.json",
        "/item/1-0/../../state/lock",
        "/api/../pcaps/1",
        "/../../etc/passwd",
        "/entries/000000000001_pcap-0_entry.json",
        "/journal/000000000000.log",
        "/state/stream-reservation",
    ],
)
async def test_paths_never_reach_outside_the_routes(api, store, target):
    with trio.fail_after(BUDGET):
        write_connection(store, 40004, 1_703_019_067_000_000_000)
        reply = await http_request(
            api.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
    assert reply.status in (400, 404), (target, reply.status)
    assert b"root:" not in reply.body
    assert b"pcap" not in reply.body or reply.headers["content-type"] == "application/json"
    assert not reply.body.startswith(b"\x4d\x3c\xb2\xa1")  # a pcap file


async def test_unknown_path_404_and_wrong_method_405(api):
    with trio.fail_after(BUDGET):
        assert (await get(api.port, "/nope")).status == 404
        reply = await http_request(
            api.port,
            b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        assert reply.status == 405
        assert reply.headers["allow"] == "GET, HEAD"
        assert (await get(api.port, "/api/wsFull")).status == 426


async def test_status_reports_counters_storage_and_client_lag(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"status": 500}, {}, {}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("response.status == 500")
            assert loads(await ws.get_message())["id"] == entries[0]["id"]
            await wait_until(lambda: next(iter(api.app.clients.values())).seq == 3)
            status = loads((await get(api.port, "/status")).body)
            write_entries(store, [{}])
            await wait_until(lambda: next(iter(api.app.clients.values())).seq == 4)
    for key in ("packets", "dropped_kernel", "dropped_ours", "connections", "entries", "errors"):
        assert status[key] == FAKE_STATS[key]
    assert status["store"]["entries_written"] == 3
    assert status["store"]["storage_limit"] == store.storage_limit
    assert status["store"]["bytes_used"] > 0
    assert status["last_seq"] == 3
    assert status["clients_connected"] == 1
    assert status["clients_missed_total"] == 0
    (client,) = status["clients"]
    assert client["path"] == "/api/wsFull"
    assert client["query"] == "response.status == 500"
    assert (client["seq"], client["lag"], client["sent"]) == (3, 0, 1)


async def test_status_shows_a_stalled_clients_lag(nursery, store):
    from kshark.api.entry_stream import StreamLimits
    from tests.support.api import RawWsClient

    api = await start_worker_api(nursery, store, limits=StreamLimits(batch_entries=4))
    with trio.fail_after(BUDGET):
        body = b"x" * 60_000
        write_entries(store, [{"body": body} for _ in range(200)])
        client = await RawWsClient.connect(api.port, "/api/wsFull", rcvbuf=4096)
        try:
            await client.send_text("")
            # It stops where its socket is full; the server holds one batch for it. Entries went
            # (the filter compiled), then no task can run and no socket is ready.
            await wait_until(lambda: any(c.buffered_bytes > 0 for c in api.app.clients.values()))
            await trio.testing.wait_all_tasks_blocked()
            status = loads((await get(api.port, "/status")).body)
        finally:
            await client.aclose()
    (c,) = status["clients"]
    assert c["lag"] == 200 - c["seq"]
    assert c["lag"] > 100
    assert 0 < c["buffered_bytes"] <= 4 * len(store.entry_bytes(1, 0))


async def test_metrics_is_prometheus_text(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{}, {}])
        reply = await get(api.port, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    described: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge")
            described[name] = kind
        else:
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
            assert m, line
            assert m[1] in described and m[1] in helped, line
            samples[m[1]] = float(m[3])
    assert all(name.startswith("kshark_") for name in described)
    assert samples["kshark_packets_total"] == FAKE_STATS["packets"]
    assert described["kshark_packets_total"] == "counter"
    assert samples["kshark_dropped_kernel_total"] == FAKE_STATS["dropped_kernel"]
    assert samples["kshark_dropped_ours_total"] == FAKE_STATS["dropped_ours"]
    assert samples["kshark_store_entries_written"] == 2
    assert samples["kshark_store_storage_limit"] == store.storage_limit
    assert samples["kshark_clients_connected"] == 0
    assert described["kshark_clients_missed_total"] == "counter"


async def test_token_protects_rest_and_streams(nursery, store):
    from trio_websocket import ConnectionRejected

    api = await start_worker_api(nursery, store, token="tok")
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{}])
        assert (await get(api.port, "/status")).status == 401
        assert (await get(api.port, "/status", {"Authorization": "Bearer tok"})).status == 200
        assert (await get(api.port, "/item/1-0?token=tok")).status == 200
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(api.ws_url()):
                pass
        assert rejected.value.status_code == 401
        async with open_websocket_url(api.ws_url("/api/wsFull?token=tok")) as ws:
            await ws.send_message("")
            assert loads(await ws.get_message())["id"] == entries[0]["id"]


async def test_head_of_a_pcap_gives_its_length_and_keeps_the_connection(api, store):
    with trio.fail_after(BUDGET):
        stream, _ = write_connection(store, 40005, 1_703_019_067_000_000_000)
        size = store.pcap_path(stream).stat().st_size
        conn = await trio.open_tcp_stream("127.0.0.1", api.port)
        async with conn:
            await conn.send_all(f"HEAD /pcaps/{stream} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await read_reply(conn, head_only=True)
            await conn.send_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            echo = await read_reply(conn)
    assert head.status == 200
    assert int(head.headers["content-length"]) == size
    assert head.body == b""
    assert echo.body == b"It's running."
