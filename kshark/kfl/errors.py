"""The one exception KFL raises: a query that cannot be compiled, with where and why."""

from __future__ import annotations


class KflError(ValueError):
    """A KFL text was rejected before any entry was looked at.

    ``line`` and ``column`` are 1-based and point at the offending token; ``str(err)`` is
    ``"line:column: message"``, the form Kubeshark users know from the original's parser.
    """

    line: int
    column: int
    message: str

    def __init__(self, line: int, column: int, message: str) -> None:
        self.line = line
        self.column = column
        self.message = message
        super().__init__(f"{line}:{column}: {message}")

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"

    def __reduce__(self) -> tuple[type[KflError], tuple[int, int, str]]:
        # Picklable with its fields (ValueError's default would pass only the text).
        return (KflError, (self.line, self.column, self.message))

    def as_dict(self) -> dict[str, object]:
        """The body of the websocket error frame: ``{"type": "kfl", "message", "line", "column"}``."""
        return {"type": "kfl", "message": str(self), "line": self.line, "column": self.column}
