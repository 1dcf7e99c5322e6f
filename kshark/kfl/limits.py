"""The bounds of one KFL query (docs/kfl.md, "Limits"): checked while compiling, each refusal a
KflError with the position of the part that passed it."""

from __future__ import annotations

from typing import Final

# Distinct regexes in one query. Each is an RE2 program with matching state of up to
# MAX_REGEX_MEM (4 MiB) and a memo of answers; without a bound a 64 KiB query could ask for
# thousands. Real filters use a handful.
MAX_REGEXES: Final = 16
# RE2 instructions in all of a query's regexes. RE2 is linear in the text, but when a pattern's
# DFA does not fit a search costs time per instruction per character, and compiling costs time
# per instruction, both on the worker's event loop: r".{1000}0" is ten characters and 8,000
# instructions. A UUID pattern is ~70, (?i)\pL+ ~1,200. See kshark/kfl/regex.py.
MAX_QUERY_PROGRAM: Final = 10_000
# Python refuses more than 100 indentation levels; stay well clear once macros are expanded.
MAX_INDENT: Final = 90
# Parts of a query, macros expanded: every operator, selector step, helper call and value that
# is not a constant is one. Each becomes a few lines of generated code and a few operations per
# entry, so this bounds the compile (off the event loop, but a thread's time all the same) and
# the query's own cost per entry. Without it a 64 KiB text of `x or x or …` is 20,000 parts, and
# macros that use macros could multiply further.
MAX_CODE_NODES: Final = 5_000
# Paths of redact() in one query: each is applied to every entry sent (a path into a body
# decodes and re-encodes it).
MAX_REDACT_PATHS: Final = 64
