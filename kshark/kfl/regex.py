"""KFL regexes on RE2: linear-time matching, as Kubeshark's KFL gets from Go's regexp.

A KFL query is chosen by a websocket client and run on every entry of a worker's stream, so a
regex must never be able to stall it. Python's ``re`` backtracks (``r"^(a+)+$"`` against a long
``"aaa…b"`` takes exponential time); RE2 — the engine Go's regexp is modelled on — runs in time
linear in the text and refuses the constructs that would need backtracking (backreferences,
lookaround, atomic groups, possessive quantifiers). No user pattern is ever handed to ``re``.

How a pattern is tested (``KflRegex.test(text) -> bool``, an unanchored search):

- A pattern that is only a literal, optionally anchored (``r"curl/"``, ``r"^/api/"``,
  ``r"\\.json$"``, ``r"^GET$"``), is decided by ``in`` / ``startswith`` / ``endswith`` / ``==``
  (``literal_kind`` / ``literal`` let the compiler inline those). Exact: RE2's ``$`` without
  ``(?m)`` is the end of the text, like ``endswith``.
- A pattern that starts with ``^`` and a literal (``^/api/v[0-9]+/``) first checks
  ``text.startswith("/api/v")``: most entries fail a selective filter there, without RE2.
- Then short texts' answers are looked up in a memo (below): the fields filters look at —
  paths, hosts, methods, header values — repeat from entry to entry.
- Anything else goes to RE2 through the google-re2 C++ binding (``re2._re2.RE2.Match``; that
  package's Python-level ``search`` costs ~4 µs a call, the binding ~0.65 µs — about 3× what
  ``re`` takes for a simple pattern on a short text, and the price of never backtracking).

Limits:

- ``MAX_REGEX_MEM``: RE2's memory budget per regex (compiled program plus its lazily built DFA
  cache). A pattern whose program does not fit is refused ("regex too large"); when the DFA cache
  fills during a search, RE2 drops it and, if that keeps happening, falls back to its NFA —
  slower, still linear. RE2's default is 8 MiB. Measured here, 1 MiB made ``[a-z]{1000}0``
  ten times slower on a long text (its DFA no longer fits); 4 MiB is as fast as 8. Memory
  actually used is far less unless a pattern's DFA explodes.
- In kshark.kfl.compiler, per query: ``MAX_REGEXES`` distinct regexes and
  ``MAX_QUERY_PROGRAM`` RE2 instructions in all. Linear is not free: when a pattern's DFA does
  not fit, a search costs up to ~15 ns per program instruction per character (measured:
  ``[a-z]{1000}[a-z]{1000}[a-z]{1000}0``, 3,000 instructions, ~40 µs per character of a text
  of "a"s), and compiling costs up to ~0.6 µs per instruction. The total bounds both for one
  query; ordinary patterns run on the DFA at a few ns per character whatever their size.
- The memo: at most ``MEMO_ENTRIES`` texts of at most ``MEMO_MAX_CHARS`` characters per regex.
  When full, new texts are searched but not remembered; after ``MEMO_STALE_MISSES`` such texts
  (the traffic's values have moved on) it is emptied and refills. Clearing on every overflow
  instead would cost each unseen text ~150 ns of dict regrowth; this costs it ~30 ns. Longer
  texts are never remembered (they rarely repeat, and would pin memory and cost a hash).

Text that holds a lone surrogate (possible only from ``json.loads`` of ``"\\ud800"``) cannot be
UTF-8: such characters are searched as U+FFFD, which is what Go's JSON decoder turns them into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import re2

from .errors import KflError

MAX_REGEX_MEM: Final = 4 << 20
MEMO_ENTRIES: Final = 256
MEMO_MAX_CHARS: Final = 128
MEMO_STALE_MISSES: Final = 4 * MEMO_ENTRIES

RE2_NOTE: Final = "KFL regexes are RE2, as in Kubeshark"

# The package's C++ binding, used directly: its Python-level search() wraps each call in a
# generator and offset bookkeeping (~4 µs). google-re2 ships no type information. pyproject pins
# google-re2 below 2; tests/kfl/test_kfl_regex.py exercises every call made here.
_RE2: Final[Any] = re2._re2.RE2
_UNANCHORED: Final[Any] = _RE2.Anchor.UNANCHORED
_NO_MATCH: Final = -1


def _options() -> Any:
    opts = re2.Options()
    opts.max_mem = MAX_REGEX_MEM
    opts.never_capture = True  # only "is there a match?" is asked: no group bookkeeping
    opts.log_errors = False  # a user's bad pattern is a KflError, not a line on stderr
    return opts


_OPTIONS: Final[Any] = _options()

LITERAL_KINDS: Final = ("contains", "prefix", "suffix", "equal")


@dataclass(frozen=True, slots=True, eq=False)
class KflRegex:
    """A compiled KFL regex. ``test(text)`` is true when the pattern matches anywhere in text.

    ``program_size`` is the size of RE2's compiled program, in instructions: what a search
    can cost per character grows with it (see ``MAX_QUERY_PROGRAM``). ``literal_kind`` is one of ``LITERAL_KINDS``
    when the pattern is a plain (optionally anchored) literal, with the literal text in
    ``literal``; ``test`` then is the equivalent string operation and never reaches RE2.
    """

    source: str
    test: Callable[[str], bool]
    program_size: int
    literal_kind: str | None = None
    literal: str = ""


def compile_regex(source: str, line: int, column: int) -> KflRegex:
    """Compile a regex body with RE2; ``column`` is where the body starts (error positions).

    Raises :class:`KflError` for a pattern RE2 refuses, naming the construct when it is one RE2
    leaves out on purpose (backreferences, lookaround, …).
    """
    try:
        encoded = source.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form
        raise KflError(line, column + exc.start, "a regex must be valid text") from None
    compiled = _RE2(encoded, _OPTIONS)
    if not compiled.ok():
        offset, message = _explain(source, compiled.error())
        raise KflError(line, column + offset, message)
    size: int = compiled.ProgramSize()
    lit = _literal_form(source)
    if lit is not None:
        kind, text = lit
        return KflRegex(source, _LITERAL_TESTS[kind](text), size, kind, text)
    return KflRegex(source, _re2_test(compiled.Match, _required_prefix(source)), size)


# --- matching ---------------------------------------------------------------------------------


def _without_surrogates(text: str) -> bytes:
    """UTF-8 of a text that holds lone surrogates, each as U+FFFD (as Go's JSON decoder has it)."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text).encode()


_Match = Callable[[Any, bytes, int, int], list[tuple[int, int]]]


def _re2_test(match: _Match, prefix: str) -> Callable[[str], bool]:
    """RE2 search behind the required-prefix check and the memo (see the module docstring).

    Everything is inlined in one closure: a Python call costs ~60 ns, a tenth of the RE2 call,
    and this runs once per entry.
    """
    memo: dict[str, bool] = {}
    get = memo.get
    unanchored = _UNANCHORED
    stale = 0  # texts not remembered since the memo filled up

    def test(text: str) -> bool:
        nonlocal stale
        if prefix and not text.startswith(prefix):
            return False
        short = len(text) <= MEMO_MAX_CHARS
        if short:
            hit = get(text)
            if hit is not None:
                return hit
        try:
            data = text.encode()
        except UnicodeEncodeError:
            data = _without_surrogates(text)
        hit = match(unanchored, data, 0, len(data))[0][0] != _NO_MATCH
        if short:
            if len(memo) < MEMO_ENTRIES:
                memo[text] = hit
            else:
                stale += 1
                if stale >= MEMO_STALE_MISSES:  # the traffic's values have moved on
                    stale = 0
                    memo.clear()
        return hit

    return test


def _contains(lit: str) -> Callable[[str], bool]:
    return lambda text: lit in text


def _prefix(lit: str) -> Callable[[str], bool]:
    return lambda text: text.startswith(lit)


def _suffix(lit: str) -> Callable[[str], bool]:
    return lambda text: text.endswith(lit)


def _equal(lit: str) -> Callable[[str], bool]:
    return lambda text: text == lit


_LITERAL_TESTS: Final[dict[str, Callable[[str], Callable[[str], bool]]]] = {
    "contains": _contains,
    "prefix": _prefix,
    "suffix": _suffix,
    "equal": _equal,
}

# Characters with a meaning in RE2 syntax outside a class. An escaped non-word ASCII character
# is that character (RE2 accepted the pattern before this is consulted, so no other escape can
# be mistaken for one: ``\d``, ``\x41``, ``\Q`` all contain a word character).
_META: Final = frozenset(".^$|?*+()[]{}\\")


def _literal_form(source: str) -> tuple[str, str] | None:
    """``(kind, literal)`` when ``source`` (already accepted by RE2) is a plain literal."""
    start = source.startswith("^")
    body = source[1:] if start else source
    end = False
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]  # RE2 refuses a trailing backslash
            if nxt.isascii() and not (nxt.isalnum() or nxt == "_"):
                out.append(nxt)
                i += 2
                continue
            return None
        if ch == "$" and i == n - 1:
            end = True
        elif ch in _META:
            return None
        else:
            out.append(ch)
        i += 1
    lit = "".join(out)
    if "\ufffd" in lit:  # searched texts may hold U+FFFD that stood for a lone surrogate
        return None
    kind = ("equal" if end else "prefix") if start else ("suffix" if end else "contains")
    return kind, lit


def _required_prefix(source: str) -> str:
    """The literal every match must start the text with (``^/api/v`` for ``^/api/v[0-9]+/``).

    "" when there is none or when the pattern has a ``|`` anywhere (an alternative could do
    without it; deciding where a top-level ``|`` is would take a parser, so any ``|`` opts out).
    A literal character followed by a quantifier is not required (``^ab*`` requires only "a").
    """
    if not source.startswith("^") or "|" in source:
        return ""
    out: list[str] = []
    i, n = 1, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            nxt = source[i + 1]
            if not nxt.isascii() or nxt.isalnum() or nxt == "_":
                break
            out.append(nxt)
            i += 2
            continue
        if ch in _META:
            if ch in "*?+{" and out:
                out.pop()
            break
        out.append(ch)
        i += 1
    prefix = "".join(out)
    return "" if "\ufffd" in prefix else prefix


# --- errors -----------------------------------------------------------------------------------

_BACKREF: Final = f"backreferences are not supported: {RE2_NOTE}"
_LOOKAHEAD: Final = f"lookahead (?= (?! is not supported: {RE2_NOTE}"
_LOOKBEHIND: Final = f"lookbehind (?<= (?<! is not supported: {RE2_NOTE}"
_ATOMIC: Final = f"atomic groups (?> are not supported: {RE2_NOTE}"
_POSSESSIVE: Final = f"possessive quantifiers (*+ ++ ?+) are not supported: {RE2_NOTE}"
_CONDITIONAL: Final = f"conditional groups (?( are not supported: {RE2_NOTE}"
_COMMENT: Final = f"comments (?#...) are not supported: {RE2_NOTE}"
_END_Z: Final = f"\\Z is not supported: write \\z for the end of the text ({RE2_NOTE})"
_HEX_U: Final = f"\\u is not supported: write a character as \\x{{00e9}} ({RE2_NOTE})"
_FLAGS: Final = frozenset("imsU-")

# RE2's error texts are "<what>: <the offending part of the pattern>".
_TOO_LARGE: Final = "pattern too large - compile failed"
_MISSING_PAREN: Final = "missing )"
_MISSING_BRACKET: Final = "missing ]"


def _explain(source: str, error: bytes | str) -> tuple[int, str]:
    """Offset in ``source`` and message for a pattern RE2 refused with ``error``."""
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else error
    what, _, arg = text.partition(": ")
    first, unclosed_paren, unclosed_bracket = _scan(source)
    if first is not None:
        return first
    if what == _TOO_LARGE:
        return 0, (
            f"regex too large: RE2 gives one regex {MAX_REGEX_MEM >> 20} MiB "
            "for its program and matching state"
        )
    if what == _MISSING_PAREN and unclosed_paren is not None:
        return unclosed_paren, "invalid regex: missing ), unterminated group"
    if what == _MISSING_BRACKET and unclosed_bracket is not None:
        return unclosed_bracket, "invalid regex: missing ], unterminated character class"
    at = source.find(arg) if arg else -1
    return max(at, 0), f"invalid regex: {text}"


def _scan(source: str) -> tuple[tuple[int, str] | None, int | None, int | None]:
    """Walk a refused pattern for what RE2 leaves out on purpose and for unclosed ( and [.

    Returns ``(first unsupported construct or stray ")" as (offset, message) or None, offset
    of the innermost unclosed "(", offset of an unclosed "[")``. Only consulted after RE2 refused the
    pattern, to say why in words; RE2 alone decides what is valid.
    """
    opens: list[int] = []
    i, n = 0, len(source)
    after_repeat = False  # the previous token was a quantifier (a following + is possessive)
    lazy = False  # ... and it already had its lazy "?"
    while i < n:
        ch = source[i]
        if ch == "\\":
            nxt = source[i + 1] if i + 1 < n else ""
            if nxt in "123456789" or nxt in "kg":
                return (i, _BACKREF), None, None
            if nxt == "Z":
                return (i, _END_Z), None, None
            if nxt in "uU":
                return (i, _HEX_U), None, None
            if nxt == "Q":  # \Q...\E quotes literally
                end = source.find("\\E", i + 2)
                i = n if end < 0 else end + 2
            else:
                i += 2
            after_repeat = False
            continue
        if ch == "[":
            close = _class_end(source, i)
            if close is None:
                return None, (opens[-1] if opens else None), i
            i = close + 1
            after_repeat = False
            continue
        if ch == "(":
            rest = source[i + 1 : i + 5]
            if rest.startswith(("?=", "?!")):
                return (i, _LOOKAHEAD), None, None
            if rest.startswith(("?<=", "?<!")):
                return (i, _LOOKBEHIND), None, None
            if rest.startswith("?>"):
                return (i, _ATOMIC), None, None
            if rest.startswith("?("):
                return (i, _CONDITIONAL), None, None
            if rest.startswith("?#"):
                return (i, _COMMENT), None, None
            if rest.startswith("?P="):
                return (i, _BACKREF), None, None
            if rest.startswith("?") and not rest.startswith(("?P<", "?<", "?:")):
                j = i + 2
                while j < n and source[j] in _FLAGS:
                    j += 1
                if j < n and source[j] not in ":)":
                    flag = source[j]
                    return (
                        (
                            j,
                            f'flag "{flag}" is not supported: RE2 flags are i, m, s, U ({RE2_NOTE})',
                        ),
                        None,
                        None,
                    )
            opens.append(i)
            i += 2 if rest.startswith("?") else 1  # "(?" is not a "?" quantifier
            after_repeat = False
            continue
        if ch == ")":
            if not opens:
                return (i, "invalid regex: unexpected ), no group to close"), None, None
            opens.pop()
            i += 1
            after_repeat = False
            continue
        repeat_end = _repeat_end(source, i)
        if repeat_end is not None:
            if after_repeat:
                if ch == "?" and not lazy:
                    lazy = True
                elif ch == "+" and not lazy:
                    return (i, _POSSESSIVE), None, None
                else:
                    after_repeat = False
            else:
                after_repeat, lazy = True, False
            i = repeat_end
            continue
        after_repeat = False
        i += 1
    return None, (opens[-1] if opens else None), None


def _repeat_end(source: str, i: int) -> int | None:
    """End offset of a quantifier starting at ``i`` (``* + ?`` or ``{n}``, ``{n,}``, ``{n,m}``)."""
    ch = source[i]
    if ch in "*+?":
        return i + 1
    if ch != "{":
        return None
    close = source.find("}", i + 1)
    if close < 0:
        return None
    lo, _, hi = source[i + 1 : close].partition(",")
    if lo.isdigit() and lo.isascii() and (not hi or (hi.isdigit() and hi.isascii())):
        return close + 1
    return None


def _class_end(source: str, i: int) -> int | None:
    """Offset of the ``]`` closing the class that opens at ``i`` (None when it never closes)."""
    n = len(source)
    j = i + 1
    if j < n and source[j] == "^":
        j += 1
    if j < n and source[j] == "]":  # a leading ] is a member
        j += 1
    while j < n:
        ch = source[j]
        if ch == "\\":
            j += 2
        elif ch == "[" and source.startswith("[:", j):  # [:alpha:]
            end = source.find(":]", j + 2)
            j = j + 1 if end < 0 else end + 2
        elif ch == "]":
            return j
        else:
            j += 1
    return None
