"""The public API the servers use: compile_query, Query, KflError, validate, macros, the clock."""

from __future__ import annotations

import inspect
import time
import types
from typing import Any

import pytest

from kshark.kfl import (
    BUILTIN_MACROS,
    KflError,
    Query,
    compile_query,
    macros_from_specs,
    parse_macro_spec,
    validate,
)
from tests.support.kfl_samples import dns, h2_lowercase, http_get, http_post


def test_signatures() -> None:
    sig = inspect.signature(compile_query)
    assert list(sig.parameters) == ["text", "macros", "now_ms"]
    assert sig.parameters["macros"].default is None
    assert sig.parameters["now_ms"].kind is inspect.Parameter.KEYWORD_ONLY
    q = compile_query("http")
    assert isinstance(q, Query)
    assert isinstance(q.match, types.FunctionType)  # a plain function: no per-call binding
    assert (q.limit, q.has_redactions, q.text) == (None, False, "http")


def test_match_returns_bools_and_survives_anything() -> None:
    q = compile_query('http and request.headers["x"].startsWith("a") or size(request) > 1')
    for odd in (
        None,
        [],
        "text",
        5,
        {"request": None},
        {"protocol": []},
        types.MappingProxyType(http_get()),
    ):
        assert type(q.match(odd)) is bool  # type: ignore[arg-type]
    assert q.match(types.MappingProxyType(http_get())) is True  # any Mapping works
    assert compile_query("").match(None) is True  # type: ignore[arg-type]


def test_operator_macros() -> None:
    shop = {"shop": 'dst.namespace == "shop" or src.namespace == "shop"'}
    assert compile_query("shop and http", shop).match(http_post()) is True
    assert compile_query("shop", shop).match(http_get()) is False
    # whole words only, never inside strings or keys
    assert compile_query('dst.shop == "x" or "shop" == "shop"', shop).match(http_get()) is True
    # an operator macro may override a built-in one
    assert compile_query("http", {"http": 'protocol.abbr in ["HTTP", "HTTP/2"]'}).match(
        h2_lowercase()
    )
    assert compile_query("http").match(h2_lowercase()) is False
    # macros may use macros; a loop ends at a plain field instead of running forever
    assert compile_query("web", {"web": "http or http2"}).match(h2_lowercase()) is True
    loop = {"ping": "pong", "pong": "ping"}
    assert compile_query("ping", loop).match({"ping": True}) is True
    assert compile_query("ping", loop).match({"ping": False}) is False


def test_builtin_macros_are_the_contracts() -> None:
    assert BUILTIN_MACROS["http"] == 'protocol.abbr == "HTTP"'
    assert BUILTIN_MACROS["dns"] == 'protocol.name == "dns"'
    assert BUILTIN_MACROS["tcp"] == 'protocol.layer4 == "tcp"'
    assert set(BUILTIN_MACROS) == {
        *("http", "http2", "grpc", "gql", "amqp", "kafka", "redis", "dns", "tcp", "udp", "tls"),
    }
    assert compile_query("dns and udp").match(dns()) is True


def test_macro_specs_from_configuration() -> None:
    assert parse_macro_spec('prod = dst.namespace == "prod"') == ("prod", 'dst.namespace == "prod"')
    assert macros_from_specs(["a=tls", "b=http or a"]) == {"a": "tls", "b": "http or a"}
    for bad in ("noequals", "x-y=tls", "and=tls", "name=  ", "=tls"):
        with pytest.raises(ValueError):
            parse_macro_spec(bad)
    with pytest.raises(ValueError):
        compile_query("http", {"not a name": "tls"})


def test_the_clock_is_read_once_and_only_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def fake_time_ns() -> int:
        reads.append(1)
        return 1_703_019_069_482_000_000  # 2 s after the example entry

    monkeypatch.setattr(time, "time_ns", fake_time_ns)
    q = compile_query('http and request.path.startsWith("/")')
    assert reads == []
    assert q.now_ms is None
    q = compile_query("timestamp >= minutes(-5) and timestamp <= now() and timestamp > hours(-1)")
    assert reads == [1]
    assert q.now_ms == 1_703_019_069_482
    assert q.match(http_get()) is True
    q = compile_query("timestamp >= seconds(-1)", now_ms=1_703_019_069_482)
    assert reads == [1]  # injected: no read
    assert q.now_ms == 1_703_019_069_482
    assert q.match(http_get()) is False


def test_validate() -> None:
    assert validate('http and response.status >= 500 and request.path == r"^/api/"') == (True, "")
    ok, message = validate("http and")
    assert ok is False
    assert message == "1:9: unexpected end of query (expected a value)"
    assert validate("x", {"x": "nosuch()"}) == (
        False,
        '1:1: in macro "x": 1:1: unknown helper "nosuch"',
    )


def test_query_objects_are_independent_and_reusable() -> None:
    a = compile_query("response.status == 200")
    b = compile_query("response.status == 500")
    entries: list[dict[str, Any]] = [http_get(), http_post()] * 3
    assert [a.match(e) for e in entries] == [True, False] * 3
    assert [b.match(e) for e in entries] == [False, True] * 3
    assert "response.status == 200" in repr(a)


def test_kfl_error_is_exported() -> None:
    with pytest.raises(KflError) as info:
        compile_query("(")
    assert info.value.line == 1
    assert info.value.column == 2
