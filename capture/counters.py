"""Named int counters that report themselves in a fixed order (the keys /status shows).

A subclass declares each counter as an `int` attribute (compiled by mypyc, that declaration is
its field, so counting stays one int add on an attribute) and passes their names, in report
order and separated by spaces (as `collections.namedtuple` takes field names), to
`Counters.__init__`, which zeroes them; `as_dict` reports them. The names are given explicitly
because a compiled class keeps neither `__slots__` nor `__annotations__`.
"""

from __future__ import annotations


class Counters:
    def __init__(self, names: str) -> None:
        self._names = tuple(names.split())
        for name in self._names:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self._names}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()})"
