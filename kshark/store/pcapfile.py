"""The classic pcap format as the store writes it: one file per connection.

Nanosecond-resolution magic (0xa1b23c4d) so the packet times the pipeline carries (ns since the
epoch) are written exactly; little-endian like every capture tool on the hosts we run on; snaplen
262144, the value tcpdump and Wireshark use, so no frame the kernel delivers is cut in practice.
"""

from __future__ import annotations

import struct

# The records themselves are framed by the packet side (capture/pcapwrite.py).

PCAP_MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144
GLOBAL_HEADER = struct.Struct(
    "<IHHiIII"
)  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
GLOBAL_HEADER_SIZE = GLOBAL_HEADER.size


def global_header(linktype: int) -> bytes:
    return GLOBAL_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, linktype)


def linktype_of_header(header: bytes) -> int | None:
    """The link type of a pcap global header the store wrote; None if it is not one."""
    if len(header) < GLOBAL_HEADER_SIZE:
        return None
    magic, _, _, _, _, _, linktype = GLOBAL_HEADER.unpack_from(header)
    return linktype if magic == PCAP_MAGIC_NS else None
