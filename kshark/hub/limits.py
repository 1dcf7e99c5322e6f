"""Every bound and timing the hub keeps, in one place, with what happens at the bound."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HubLimits:
    """The hub's bounds and timings.

    client_channel: batches of entries (what one read from a worker brought) waiting for one
        client's websocket. When it is full, or client_buffer_bytes is, the relays of that
        client wait and read nothing more from their workers: TCP pushes back and the workers
        block in their own sends (each holding one batch). A slow client costs the hub this
        much, never a growing queue; other clients are not affected.
    client_buffer_bytes: bytes of entries held for one client (its channel, and its reorder
        buffer for "ordered" streams). A relay waits for room before handing over a batch; a
        batch larger than the whole budget is let through alone, so nothing can wedge.
    max_write_bytes: a client's sender takes batches waiting in its channel until this many
        bytes, and writes them in one send (fewer syscalls and wake-ups per entry).
    max_entry_bytes: largest message accepted from a worker. Past it that worker connection is
        dropped; the relay reconnects and would meet the same entry again, so this is set far
        above any entry a worker writes (bodies are capped by the worker's --max-body).
    receive_buffer: bytes read per receive from a worker socket (many entries per syscall).
        What one relay holds: one read, plus at most one incomplete message (max_entry_bytes).
    connect_timeout: seconds to open a worker websocket (TCP + handshake). Past it: backoff.
    worker_silence: seconds a worker connection may stay silent (not a byte) while the hub
        waits to read from it before the hub pings it. Silence while the hub is not reading
        (its client is slow: backpressure) does not count. A worker's own stream pings its
        quiet clients every 20 s, so a healthy worker is rarely silent this long.
    worker_pong_timeout: seconds the worker has to answer that ping (with anything). Past it
        the worker is hung (stopped, or a network black hole): the connection is dropped and
        handled as a dead worker's (counted, `down`, reconnect with backoff, resume). Also the
        most a control frame (pong, close) to a worker may take to send.
    backoff_initial, backoff_max: reconnect delays to a failed worker double from the first to
        the second, each with jitter (a random 50–100 % of the delay, so hubs and streams do
        not retry in step). A connection that delivered an entry or lived backoff_reset_after
        seconds starts the next series from backoff_initial.
    reorder_window, reorder_entries: `"ordered": true` streams hold an entry at most this many
        seconds, and at most this many entries at once (one more releases the oldest by
        timestamp at once). See merge.py.
    status_interval: seconds between two probes of a worker's /status (state, lag, its id).
    status_timeout: seconds one /status probe may take in all (connect, answer, whole body),
        so a worker that answers slowly, or trickles its answer, cannot hold a probe. Past it:
        the worker is `down` for the monitor.
    http_timeout: seconds for a worker to accept, answer a REST request, or send the next chunk
        of a download. Past it: 502 to the client (or the download is cut).
    max_status_bytes: largest worker /status read by the monitor. Past it the body is not read:
        the worker stays `up` (it answered), its lag and newest entry become unknown and its
        `status_problem` says why. A worker's own /status lists at most 100 clients with
        queries cut to 256 characters (kshark.api.status_caps): well under this.
    first_frame_timeout: seconds a new client has to send its query. Past it: error frame, 1008.
    ping_interval: a ping goes to a client after this many seconds without a frame (quiet
        filters survive proxies that cut idle connections).
    """

    client_channel: int = 64
    client_buffer_bytes: int = 8 << 20
    max_write_bytes: int = 1 << 20
    max_entry_bytes: int = 64 << 20
    receive_buffer: int = 256 * 1024
    connect_timeout: float = 5.0
    worker_silence: float = 15.0
    worker_pong_timeout: float = 10.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    backoff_reset_after: float = 5.0
    reorder_window: float = 1.0
    reorder_entries: int = 4096
    status_interval: float = 2.0
    status_timeout: float = 10.0
    http_timeout: float = 10.0
    max_status_bytes: int = 1 << 20
    first_frame_timeout: float = 120.0
    ping_interval: float = 20.0
