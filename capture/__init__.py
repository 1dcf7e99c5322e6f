"""Packets to entries: pure, synchronous, sans-IO (see docs/internals.md)."""
