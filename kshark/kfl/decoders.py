"""``json()`` and ``xml()``: turn a body string into a value the selector can walk, and back.

Both first try the text as base64 (``response.content.text`` is always base64, per ENTRY.md),
then as the text itself. Anything that does not decode is MISSING — decoders never raise.

Limits (captured traffic chooses these bodies, not the query author):
- ``MAX_DECODE_CHARS``: longer texts are not parsed at all (the value is missing). 4 MiB keeps
  one decode to a few milliseconds; bodies larger than that are rare in filters' targets.
- ``MAX_XML_DEPTH``: deeper XML is refused (missing), so that walking or re-serialising the
  result can never approach the recursion limit. JSON depth is bounded by orjson (1024).

XML safety: the document is parsed with expat (the parser under ``xml.etree``) driven directly,
with a handler that refuses any DOCTYPE. Without a DTD there are no entity declarations, so no
entity expansion ("billion laughs", quadratic blow-up) and no external entity fetch can happen;
parameter entity parsing is switched off as well, and an external-entity handler refuses any
reference. Only the five predefined entities and character references are expanded, which
cannot amplify. That is what defusedxml would enforce, with no extra dependency.
"""

from __future__ import annotations

import binascii
from typing import Any, Final
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import orjson

from .values import MISSING

MAX_DECODE_CHARS: Final = 4 * 1024 * 1024
MAX_XML_DEPTH: Final = 128

_NOT_BASE64_START = frozenset('{["<')


def _unbase64(s: str) -> bytes | None:
    """The bytes ``s`` encodes if it is strict, padded base64; else None."""
    if not s or len(s) % 4 or s[0] in _NOT_BASE64_START:
        return None
    try:
        return binascii.a2b_base64(s, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return None


def decode_json_ex(v: Any) -> tuple[Any, bool]:
    """(value, was_base64). A list or object passes through; MISSING if it does not parse."""
    t = type(v)
    if t is str:
        if len(v) > MAX_DECODE_CHARS:
            return MISSING, False
        raw = _unbase64(v)
        if raw is not None:
            try:
                return orjson.loads(raw), True
            except orjson.JSONDecodeError:
                pass
        try:
            return orjson.loads(v), False
        except orjson.JSONDecodeError:
            return MISSING, False
    if t is dict or t is list:
        return v, False
    return MISSING, False


def decode_json(v: Any) -> Any:
    """``sel.json()`` (decode_json_ex without the flag, on the hot path)."""
    if type(v) is str and len(v) <= MAX_DECODE_CHARS:
        if v and not len(v) % 4 and v[0] not in _NOT_BASE64_START:
            try:
                return orjson.loads(binascii.a2b_base64(v, strict_mode=True))
            except (binascii.Error, ValueError):  # not base64, or not JSON inside: try the text
                pass
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return MISSING
    return decode_json_ex(v)[0]


class _Refused(Exception):
    """Raised from an expat handler to stop a document we will not parse."""


class _Builder:
    """Builds the walkable form of an XML document from expat events, without recursion.

    ``<a x="1"><b>t</b><b>u</b><c/></a>`` becomes ``{"a": {"@x": "1", "b": ["t", "u"], "c": ""}}``:
    the root element is the single key; an element with neither attributes nor children is its
    text (stripped); otherwise an object of ``@attribute``s, children (a list when a tag repeats)
    and ``#text`` when it has text of its own.
    """

    __slots__ = ("result", "stack")

    def __init__(self) -> None:
        self.stack: list[tuple[str, dict[str, str], dict[str, Any], list[str]]] = []
        self.result: Any = MISSING

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if len(self.stack) >= MAX_XML_DEPTH:
            raise _Refused("too deep")
        self.stack.append((tag, attrs, {}, []))

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1][3].append(text)

    def end(self, _tag: str) -> None:
        tag, attrs, children, texts = self.stack.pop()
        text = "".join(texts).strip()
        value: Any
        if not attrs and not children:
            value = text
        else:
            value = {"@" + k: v for k, v in attrs.items()}
            value.update(children)
            if text:
                value["#text"] = text
        if self.stack:
            siblings = self.stack[-1][2]
            if tag in siblings:
                prev = siblings[tag]
                if type(prev) is list:
                    prev.append(value)
                else:
                    siblings[tag] = [prev, value]
            else:
                siblings[tag] = value
        else:
            self.result = {tag: value}


def _refuse(*_args: Any) -> Any:
    raise _Refused("DTDs and entities are not accepted")


def parse_xml(data: str | bytes) -> Any:
    """The walkable form of an XML document, or MISSING."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    builder = _Builder()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except (expat.ExpatError, _Refused, ValueError, UnicodeError):
        return MISSING
    return builder.result


def decode_xml_ex(v: Any) -> tuple[Any, bool]:
    """(value, was_base64) for ``sel.xml()``."""
    if type(v) is not str or len(v) > MAX_DECODE_CHARS:
        return MISSING, False
    raw = _unbase64(v)
    if raw is not None:
        doc = parse_xml(raw)
        if doc is not MISSING:
            return doc, True
    return parse_xml(v), False


def decode_xml(v: Any) -> Any:
    """``sel.xml()``."""
    return decode_xml_ex(v)[0]


def _leaf(v: Any) -> Any:
    if type(v) is dict and all(type(k) is str and (k == "#text" or k[:1] == "@") for k in v):
        return v.get("#text", "")
    return v


def xml_leaf(v: Any) -> Any:
    """At the end of an XML path, an element holding only attributes and text is its text.

    So ``xml().bookstore.book[1].title == "Harry Potter"`` holds for
    ``<title lang="en">Harry Potter</title>``, while ``title["@lang"]`` still reaches the attribute.
    """
    if type(v) is list:
        return [_leaf(x) for x in v]
    return _leaf(v)


def dump_xml(doc: Any, prolog: bool) -> str:
    """Serialise the walkable form back to XML (used after redacting inside a body)."""
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n'] if prolog else []
    if type(doc) is not dict or len(doc) != 1:
        raise ValueError("not a document")
    ((tag, value),) = doc.items()
    _dump_element(out, tag, value)
    return "".join(out)


def _dump_element(out: list[str], tag: str, value: Any) -> None:
    # Depth is bounded by MAX_XML_DEPTH (documents come from parse_xml), so recursion is safe.
    if type(value) is list:
        for item in value:
            _dump_element(out, tag, item)
        return
    if type(value) is not dict:
        out.append(f"<{tag}>{escape(str(value))}</{tag}>")
        return
    attrs = "".join(f" {k[1:]}={quoteattr(str(v))}" for k, v in value.items() if k[:1] == "@")
    out.append(f"<{tag}{attrs}>")
    text = value.get("#text")
    if text is not None:
        out.append(escape(str(text)))
    for k, v in value.items():
        if k[:1] != "@" and k != "#text":
            _dump_element(out, k, v)
    out.append(f"</{tag}>")
