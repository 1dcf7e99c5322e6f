"""What live capture refuses with: each message is meant for the user as is."""

from __future__ import annotations


class LiveCaptureError(Exception):
    """Live capture could not start; the message is meant for the user as is."""


class LivePermissionError(LiveCaptureError, PermissionError):
    """No root / CAP_NET_RAW. The CLI prints it as ``kshark-worker: <message>`` and exits 2."""


class LiveInterfaceError(LiveCaptureError):
    """An interface name that does not exist (in this network namespace), or a bad list."""


class LiveFilterError(LiveCaptureError, ValueError):
    """A BPF expression libpcap rejected; the message names the expression."""
