"""json() and xml(): base64 first, bounded sizes, and XML that cannot expand or fetch entities."""

from __future__ import annotations

import base64
import time

from kshark.kfl import compile_query
from kshark.kfl.decoders import MAX_DECODE_CHARS, MAX_XML_DEPTH, decode_json, decode_xml
from kshark.kfl.values import MISSING
from tests.support.kfl_samples import BOOKSTORE_XML, b64


def body(query: str, text: str) -> bool:
    return compile_query(query).match({"body": text})


def test_json_plain_and_base64() -> None:
    assert body('body.json().a == "b"', '{"a": "b"}')
    assert body('body.json().a == "b"', b64('{"a": "b"}'))
    assert body("body.json() == 1234", "1234")  # valid base64, but not of JSON: read as text
    assert decode_json("MTIz") == 123  # base64 of "123" wins, as KFL.md says
    assert body("body.json()[1] == 2", " [1, 2] ")
    assert not body("body.json()", "not json")
    assert not body("body.json()", "")
    assert decode_json({"already": "object"}) == {"already": "object"}
    assert decode_json(5) is MISSING


def test_json_size_cap() -> None:
    big = '{"a": "' + "x" * MAX_DECODE_CHARS + '"}'
    assert decode_json(big) is MISSING
    assert not body('body.json().a.startsWith("x")', big)
    fits = '{"a": "' + "x" * (MAX_DECODE_CHARS - 16) + '"}'
    assert body('body.json().a.startsWith("x")', fits)


def test_xml_shape() -> None:
    doc = decode_xml(BOOKSTORE_XML)
    assert doc["bookstore"]["book"][1]["title"] == {"@lang": "en", "#text": "Harry Potter"}
    assert doc["bookstore"]["book"][0]["price"] == "30.00"
    assert decode_xml(b64(BOOKSTORE_XML)) == doc
    assert decode_xml("<a>x<b>1</b>y</a>") == {"a": {"b": "1", "#text": "xy"}}
    assert decode_xml("<a/>") == {"a": ""}
    assert decode_xml("<a>&lt;&amp;&#65;&#x42;</a>") == {"a": "<&AB"}
    assert decode_xml("<a><b>") is MISSING
    assert decode_xml("plain text") is MISSING
    assert decode_xml(None) is MISSING


def test_xml_leaf_text_and_attributes_in_queries() -> None:
    text = b64(BOOKSTORE_XML)
    assert body('body.xml().bookstore.book[1].title == "Harry Potter"', text)
    assert body('body.xml().bookstore.book[1].title["@lang"] == "en"', text)
    assert body('body.xml().bookstore.book.*.title == "Everyday Italian"', text)
    assert body("size(body.xml().bookstore.book) == 2", text)
    assert body('body.xml()..year == "2005"', text)


def test_xml_entity_bombs_are_refused_quickly() -> None:
    lol = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{lol}]><lolz>&lol9;</lolz>'
    started = time.perf_counter()
    assert decode_xml(bomb) is MISSING
    assert decode_xml(base64.b64encode(bomb.encode()).decode()) is MISSING
    assert time.perf_counter() - started < 1.0  # 10^9 expansions would take minutes
    assert not body("body.xml().lolz", bomb)


def test_xml_external_entities_and_dtds_are_refused() -> None:
    xxe = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    assert decode_xml(xxe) is MISSING
    assert decode_xml('<!DOCTYPE r SYSTEM "http://example.invalid/r.dtd"><r>1</r>') is MISSING
    assert decode_xml("<!DOCTYPE r><r>1</r>") is MISSING
    assert decode_xml("<r>&undefined;</r>") is MISSING


def test_xml_depth_and_size_caps() -> None:
    ok = "<a>" * MAX_XML_DEPTH + "x" + "</a>" * MAX_XML_DEPTH
    deep = "<a>" * (MAX_XML_DEPTH + 1) + "x" + "</a>" * (MAX_XML_DEPTH + 1)
    assert decode_xml(ok) is not MISSING
    assert decode_xml(deep) is MISSING
    assert decode_xml("<a>" + "x" * MAX_DECODE_CHARS + "</a>") is MISSING
