"""Protocol Buffers message bodies as something a person can read, with or without the .proto.

`raw_fields` reads the wire format alone (protoc --decode_raw's view): field number → value,
with the wire type saying what the value is, because without the schema a varint is only an
integer and a length-delimited field may be a string, bytes, a nested message or packed numbers.
A length-delimited value is shown as a string when it is printable UTF-8, else as a nested
message when it parses as one entirely (and the depth allows), else as base64 bytes. Bounded:
`max_depth` nesting levels, `max_fields` fields in all, strings cut at `MAX_STRING` characters.

`ProtoDecoder` decodes with a schema: a FileDescriptorSet (`protoc --descriptor_set_out=FILE
--include_imports`, or `buf build -o FILE`), loaded with the `protobuf` package's descriptor_pool
and printed with json_format (the well-kept way: protobuf's own JSON mapping, every type and
well-known type included). The caller reads the file and hands the bytes in (sans-IO); the
decoder looks methods up by gRPC path.
"""

from __future__ import annotations

from binascii import b2a_base64
from typing import Any

__all__ = ["MAX_STRING", "ProtoDecoder", "ProtoDescriptorError", "raw_fields"]

MAX_STRING = 4096  # characters of a string (or base64 bytes) value shown; longer ones end in "…"

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5


class _Bad(Exception):
    pass


def raw_fields(data: bytes, max_depth: int = 8, max_fields: int = 2000) -> dict[str, Any] | None:
    """The message as {field number: value or [values]}; None when data is not a message.

    A value is {"varint": n} | {"fixed64": n} | {"fixed32": n} | {"string": s} |
    {"bytes": base64} | {"message": {...}}; a field number seen more than once maps to a list.
    Past max_fields the rest of the message is left out and "…" maps to the bytes not shown.
    """
    budget = [max_fields]
    try:
        return _message(data, 0, len(data), max_depth, budget)
    except _Bad:
        return None


def _message(data: bytes, pos: int, end: int, depth: int, budget: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while pos < end:
        if budget[0] <= 0:
            out["…"] = f"{end - pos} bytes not shown"
            break
        key, pos = _varint(data, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0 or number >= 1 << 29:
            raise _Bad
        value: dict[str, Any]
        if wire == _VARINT:
            n, pos = _varint(data, pos, end)
            value = {"varint": n}
        elif wire == _I64:
            if pos + 8 > end:
                raise _Bad
            value = {"fixed64": int.from_bytes(data[pos : pos + 8], "little")}
            pos += 8
        elif wire == _I32:
            if pos + 4 > end:
                raise _Bad
            value = {"fixed32": int.from_bytes(data[pos : pos + 4], "little")}
            pos += 4
        elif wire == _LEN:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Bad
            value = _len_value(data, pos, pos + length, depth, budget)
            pos += length
        else:  # groups (3, 4) are long deprecated; 6 and 7 do not exist
            raise _Bad
        budget[0] -= 1
        name = str(number)
        have = out.get(name)
        if have is None:
            out[name] = value
        elif isinstance(have, list):
            have.append(value)
        else:
            out[name] = [have, value]
    return out


def _len_value(data: bytes, start: int, stop: int, depth: int, budget: list[int]) -> dict[str, Any]:
    chunk = data[start:stop]
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _printable(text):
        return {"string": text if len(text) <= MAX_STRING else text[:MAX_STRING] + "…"}
    if depth > 0 and stop > start:
        saved = budget[0]
        try:
            return {"message": _message(data, start, stop, depth - 1, budget)}
        except _Bad:
            budget[0] = saved
    shown = chunk[: MAX_STRING * 3 // 4]
    encoded = b2a_base64(shown, newline=False).decode("ascii")
    return {"bytes": encoded + ("…" if len(shown) < len(chunk) else "")}


def _printable(text: str) -> bool:
    """Printable but for ordinary whitespace (a JSON or multi-line text field)."""
    return text.replace("\n", "").replace("\r", "").replace("\t", "").isprintable()


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while pos < end:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            break
    raise _Bad


class ProtoDescriptorError(Exception):
    """The descriptor set cannot be used; str() says why in one line."""


class ProtoDecoder:
    """Decodes gRPC messages to JSON with the schemas of a FileDescriptorSet."""

    def __init__(self, descriptor_set: bytes, name: str = "descriptor set") -> None:
        # Imported here: only a worker started with --proto-descriptor needs protobuf.
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from google.protobuf.message import DecodeError

        try:
            fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        except DecodeError as exc:
            raise ProtoDescriptorError(f"{name}: not a FileDescriptorSet ({exc})") from None
        if not fds.file:
            raise ProtoDescriptorError(f"{name}: the FileDescriptorSet holds no files")
        pool = descriptor_pool.DescriptorPool()
        pending = list(fds.file)
        # Files must be added after the files they import; the set may list them in any order.
        while pending:
            progress = False
            for fd in list(pending):
                try:
                    pool.Add(fd)
                except (TypeError, KeyError, ValueError):
                    continue
                pending.remove(fd)
                progress = True
            if not progress:
                missing = ", ".join(f.name for f in pending)
                raise ProtoDescriptorError(
                    f"{name}: cannot load {missing} (an import missing from the set? "
                    "build it with --include_imports)"
                )
        self._pool = pool
        self._get_class = message_factory.GetMessageClass
        self._classes: dict[tuple[str, str, bool], Any] = {}
        self.services = sum(len(f.service) for f in fds.file)
        self.messages = sum(len(f.message_type) for f in fds.file)

    def message_class(self, service: str, method: str, is_request: bool) -> Any:
        """The generated class of that method's request/response message; None if unknown."""
        key = (service, method, is_request)
        cls = self._classes.get(key, False)
        if cls is not False:
            return cls
        cls = None
        try:
            svc = self._pool.FindServiceByName(service)
        except KeyError:
            svc = None
        if svc is not None:
            m = svc.methods_by_name.get(method)
            if m is not None:
                cls = self._get_class(m.input_type if is_request else m.output_type)
        if len(self._classes) < 4096:
            self._classes[key] = cls
        return cls

    def decode(
        self, service: str, method: str, is_request: bool, data: bytes
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(the message as protobuf's JSON mapping, None) or (None, why not)."""
        cls = self.message_class(service, method, is_request)
        if cls is None:
            return None, f"method /{service}/{method} is not in the descriptor set"
        from google.protobuf import json_format
        from google.protobuf.message import DecodeError

        try:
            msg = cls.FromString(data)
        except DecodeError as exc:
            return None, f"not a {cls.DESCRIPTOR.full_name}: {exc}"
        out: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        return out, None
