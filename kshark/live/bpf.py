"""Capture filters: a tcpdump-style expression compiled to classic BPF by libpcap
(`pcap_compile` on a `pcap_open_dead` handle, through ctypes: no scapy import, no subprocess) and
attached to a socket.

It is compiled for link type Ethernet on raw sockets, and for raw IP (DLT_RAW) on cooked sockets
(the kernel runs a cooked socket's filter on the packet starting at its network header), then
attached with `SO_ATTACH_FILTER` *before* the socket is bound, so no unfiltered packet ever
enters the ring. Link-layer expressions (`ether host ...`, `arp`) therefore cannot be used with
`any`; they fail with a clear message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
from typing import Any

from kshark.live.errors import LiveFilterError

SO_ATTACH_FILTER = 26
_DLT_EN10MB = 1
_DLT_RAW = 12  # libpcap's DLT for "raw IP" on Linux
_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
# The BPF program's "accept" returns this many bytes: larger than any frame, so never truncates.
_FILTER_SNAPLEN = 262144


class _BpfInsn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn)))


_libpcap: Any = None


def _load_libpcap() -> Any:
    global _libpcap
    if _libpcap is None:
        name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise LiveFilterError(
                f"capture filters need libpcap (Debian package libpcap0.8): {exc}"
            ) from exc
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(_BpfProgram),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        )
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_BpfProgram),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        _libpcap = lib
    return _libpcap


def compile_filter(expression: str, *, cooked: bool) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump-style expression to classic BPF: [(code, jt, jf, k), ...].

    `cooked=False` compiles for Ethernet frames (raw sockets), `cooked=True` for packets that
    start at the IP header (cooked sockets, `any`). Raises LiveFilterError naming the
    expression. Needs no privilege.
    """
    lib = _load_libpcap()
    handle = lib.pcap_open_dead(_DLT_RAW if cooked else _DLT_EN10MB, _FILTER_SNAPLEN)
    if not handle:
        raise LiveFilterError(f"invalid capture filter {expression!r}: libpcap out of memory")
    prog = _BpfProgram()
    try:
        text = expression.encode()
        if lib.pcap_compile(handle, ctypes.byref(prog), text, 1, _PCAP_NETMASK_UNKNOWN) != 0:
            why = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            where = " (with 'any', filters start at the IP header)" if cooked else ""
            raise LiveFilterError(f"invalid capture filter {expression!r}{where}: {why}")
        insns = [(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[: prog.bf_len]]
        lib.pcap_freecode(ctypes.byref(prog))
        return insns
    finally:
        lib.pcap_close(handle)


def attach_filter(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native alignment).
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program
