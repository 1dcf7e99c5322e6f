"""Entries shaped like ../shared/ENTRY.md, shared by the KFL tests.

Each builder returns a fresh dict, so a test that mutates one cannot affect another.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

# The ENTRY.md example verbatim: HTTP/1.1 GET /catalogue, 200, a base64 JSON body.
_GET = json.loads(
    """{"dst":{"endpointSlice":null,"ip":"10.0.53.101","name":"","namespace":"","pod":null,
 "port":"80","service":null},"elapsedTime":2,"entryFile":"000000020017_pcap-0_entry.json",
 "error":null,"failed":false,"id":"10.0.41.65:30001/000000020017.pcap-0","index":0,
 "node":{"ip":"10.0.41.65","name":"ip-10-0-41-65.ec2.internal"},"outgoing":false,"passed":false,
 "protocol":{"abbr":"HTTP","backgroundColor":"#416CDE","fontSize":12,"foregroundColor":"#ffffff",
 "layer3":"ip","layer4":"tcp","longName":"Hypertext Transfer Protocol -- HTTP/1.1","macro":"http",
 "name":"http","ports":["80","443","8080"],"priority":0,
 "referenceLink":"https://datatracker.ietf.org/doc/html/rfc2616","version":"1.1"},"record":"",
 "request":{"bodySize":0,"cookies":{},"headers":{"Accept":"application/json","Host":"catalogue",
 "User-Agent":"Go-http-client/1.1"},"headersSize":-1,"httpVersion":"HTTP/1.1","method":"GET",
 "path":"/catalogue","pathSegments":["catalogue"],"queryString":{"size":"5","tags":"blue"},
 "targetUri":"/catalogue?size=5&tags=blue","url":"/catalogue?size=5&tags=blue"},"requestSize":152,
 "response":{"bodySize":77,"content":{"encoding":"base64",
 "mimeType":"application/json; charset=utf-8","size":77,
 "text":"W3siaWQiOiIzMzk1YTQzZS0yZDg4LTQwZGUtYjk1Zi1lMDBlMTUwMjA4NWIiLCJuYW1lIjoiQ29sb3VyZnVsIiwicHJpY2UiOjE4fV0="},
 "cookies":{},"headers":{"Content-Length":"77","Content-Type":"application/json; charset=utf-8"},
 "headersSize":-1,"httpVersion":"HTTP/1.1","redirectURL":"","status":200,"statusText":"OK"},
 "responseSize":237,"src":{"endpointSlice":null,"ip":"10.0.53.77","name":"","namespace":"",
 "pod":null,"port":"51846","service":null},"startTime":"2023-12-19T20:51:07.482113205Z",
 "stream":"000000020017.pcap","timestamp":1703019067482,"tls":false,"worker":"10.0.41.65:30001"}"""
)

BOOKSTORE_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    "<bookstore>\r\n"
    '  <book category="cooking">\r\n'
    '    <title lang="en">Everyday Italian</title>\r\n'
    "    <author>Giada De Laurentiis</author>\r\n"
    "    <year>2005</year>\r\n"
    "    <price>30.00</price>\r\n"
    "  </book>\r\n"
    '  <book category="children">\r\n'
    '    <title lang="en">Harry Potter</title>\r\n'
    "    <author>J K. Rowling</author>\r\n"
    "    <year>2005</year>\r\n"
    "    <price>29.99</price>\r\n"
    "  </book>\r\n"
    "</bookstore>\r\n"
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def http_get() -> dict[str, Any]:
    """ENTRY.md's example."""
    return copy.deepcopy(_GET)


def http_post() -> dict[str, Any]:
    """POST /api/v1/orders?item=a&item=b with a JSON body; 500 with an XML body; a cookie."""
    e = copy.deepcopy(_GET)
    body = '{"order": {"id": 7, "items": [{"sku": "X-1", "qty": 2}, {"sku": "Y-9", "qty": 1}]}, "password": "hunter2", "user": {"name": "ann", "password": "s3cret"}}'
    e.update(
        {
            "id": "10.0.41.65:30001/000000020018.pcap-1",
            "index": 1,
            "stream": "000000020018.pcap",
            "entryFile": "000000020018_pcap-1_entry.json",
            "timestamp": 1703019068000,
            "startTime": "2023-12-19T20:51:08.000000000Z",
            "elapsedTime": 153,
            "outgoing": True,
            "requestSize": 412,
            "responseSize": 1090,
        }
    )
    e["dst"].update({"ip": "10.0.53.102", "port": "8080", "name": "orders", "namespace": "shop"})
    e["src"].update({"ip": "192.168.1.20", "port": "40112", "name": "front", "namespace": "shop"})
    e["request"] = {
        "bodySize": len(body),
        "cookies": {"session": "abc123"},
        "headers": {
            "Authorization": "Bearer eyJhbGciOi.secret",
            "Content-Type": "application/json",
            "Cookie": "session=abc123",
            "Host": "orders:8080",
            "User-Agent": "curl/8.4.0",
            "X-Request-Id": "r-42",
        },
        "headersSize": -1,
        "httpVersion": "HTTP/1.1",
        "method": "POST",
        "path": "/api/v1/orders",
        "pathSegments": ["api", "v1", "orders"],
        "postData": {"mimeType": "application/json", "params": [], "text": body},
        "queryString": {"item": ["a", "b"], "debug": "1"},
        "targetUri": "/api/v1/orders?item=a&item=b&debug=1",
        "url": "/api/v1/orders?item=a&item=b&debug=1",
    }
    e["response"] = {
        "bodySize": len(BOOKSTORE_XML),
        "content": {
            "encoding": "base64",
            "mimeType": "application/xml",
            "size": len(BOOKSTORE_XML),
            "text": b64(BOOKSTORE_XML),
        },
        "cookies": {"tracking": "t-1"},
        "headers": {
            "Content-Type": "application/xml",
            "Set-Cookie": "tracking=t-1",
            "X-Trace": "a, b",
        },
        "headersSize": -1,
        "httpVersion": "HTTP/1.1",
        "redirectURL": "",
        "status": 500,
        "statusText": "Internal Server Error",
    }
    return e


def http10_redirect() -> dict[str, Any]:
    """HTTP/1.0 over IPv6, 302 with a Location, a form body, TLS flag set."""
    e = copy.deepcopy(_GET)
    e["protocol"].update(
        {
            "version": "1.0",
            "longName": "Hypertext Transfer Protocol -- HTTP/1.0",
            "referenceLink": "https://datatracker.ietf.org/doc/html/rfc1945",
            "layer3": "ipv6",
        }
    )
    e["tls"] = True
    e["src"].update({"ip": "fd00::1", "port": "55000"})
    e["dst"].update({"ip": "fd00::2", "port": "443"})
    e["request"].update(
        {
            "httpVersion": "HTTP/1.0",
            "method": "PUT",
            "path": "/login",
            "pathSegments": ["login"],
            "url": "/login",
            "targetUri": "/login",
            "queryString": {},
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "postData": {
                "mimeType": "application/x-www-form-urlencoded",
                "params": [{"name": "user", "value": "bob"}, {"name": "pw", "value": "x"}],
                "text": "user=bob&pw=x",
            },
            "bodySize": 13,
        }
    )
    e["response"] = {
        "bodySize": 0,
        "content": {"encoding": "base64", "mimeType": "", "size": 0},
        "cookies": {},
        "headers": {"Location": "/home"},
        "headersSize": -1,
        "httpVersion": "HTTP/1.0",
        "redirectURL": "/home",
        "status": 302,
        "statusText": "Found",
    }
    return e


def unanswered() -> dict[str, Any]:
    """A request whose response was never seen: ``response`` is {} and ``error`` is set."""
    e = copy.deepcopy(_GET)
    e["response"] = {}
    e["responseSize"] = 0
    e["error"] = {"type": "pair-not-found", "msg": "no response"}
    return e


def h2_lowercase() -> dict[str, Any]:
    """HTTP/2-shaped: lowercase header names, abbr "HTTP/2"."""
    e = copy.deepcopy(_GET)
    e["protocol"].update({"abbr": "HTTP/2", "name": "http", "version": "2.0", "macro": "http2"})
    e["request"]["headers"] = {
        ":path": "/catalogue",
        "user-agent": "grpc-go/1.5",
        "content-type": "application/grpc",
    }
    return e


def dns() -> dict[str, Any]:
    return {
        "id": "10.0.41.65:30001/000000000007.pcap-0",
        "protocol": {"name": "dns", "abbr": "DNS", "layer4": "udp", "macro": "dns"},
        "request": {
            "opCode": "Query",
            "questions": [{"name": "session-db.sock-shop.svc.cluster.local", "type": "A"}],
        },
        "response": {"code": "NoError", "answers": [{"name": "x", "ip": "10.0.0.9", "ttl": 30}]},
        "timestamp": 1703019069000,
        "tls": False,
        "src": {"ip": "10.0.53.77", "port": "53000"},
        "dst": {"ip": "10.96.0.10", "port": "53"},
    }


def car() -> dict[str, Any]:
    """The basenine test document (arbitrary JSON, as the original's unit tests used)."""
    return {
        "id": 114905,
        "model": "Camaro",
        "brand": {"name": "Chevrolet"},
        "year": 2021,
        "similar": {"id": 114906, "model": "Camaro", "brand": {"name": "Chevrolet"}},
        "path": [1, 2, 3],
        "neg": [-1, -2, -3],
        "objs": [{"x": 1}, {"x": 2}, {"x": 3}],
        "empty": [],
        "nested": [["a", "b"], ["c"]],
        "zero": 0,
        "minus": -4,
        "float": 3.14,
        "nothing": None,
        "emptyText": "",
        "emptyObj": {},
        "big": 1678675066172,
        "numText": "007",
        "escaped": 'say "hi"\n\tnow\\',
    }


ENTRIES = {
    "get": http_get,
    "post": http_post,
    "h10": http10_redirect,
    "noresp": unanswered,
    "h2": h2_lowercase,
    "dns": dns,
    "car": car,
    "empty": dict,
}
