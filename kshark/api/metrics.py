"""/metrics for the worker and the hub: Prometheus text exposition, format 0.0.4.

One small renderer of ours rather than prometheus_client: that library is not otherwise a
dependency, its model is a registry of collectors (process-global by default) for what here is
formatting a dozen lines from a /status the app has already built, and its exposition would
change what scrapers see (integers written as floats, a `_created` series beside each
counter). The format is stable and small: HELP and TYPE lines, then one line a sample.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family: its samples are (labels, value); labels in the order given."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    samples: Sequence[tuple[Mapping[str, str], int | float]]


def render(metrics: Iterable[Metric]) -> str:
    """The exposition text of `metrics`, in order."""
    lines: list[str] = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {_escape_help(m.help)}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            if labels:
                pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{m.name}{{{pairs}}} {_number(value)}")
            else:
                lines.append(f"{m.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def status_metrics(
    status: Mapping[str, Any], prefix: str, known: Mapping[str, tuple[str, str]]
) -> list[Metric]:
    """One metric per number in a /status document (nested objects joined with `_`, booleans
    as 0/1, anything else left out), named `prefix` + its path. `known` gives the kind and
    HELP text of top-level names; the others are gauges described by their path. A counter's
    name ends in `_total`."""
    out: list[Metric] = []
    for path, value in _numeric_leaves(status, ()):
        name = prefix + "_".join(path)
        info = known.get(path[0]) if len(path) == 1 else None
        kind, help_text = info or ("gauge", " ".join(path))
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"
        out.append(Metric(name, kind, help_text, [({}, value)]))
    return out


def _numeric_leaves(
    value: Mapping[str, Any], prefix: tuple[str, ...]
) -> list[tuple[tuple[str, ...], float]]:
    out: list[tuple[tuple[str, ...], float]] = []
    for key, v in value.items():
        name = (*prefix, re.sub(r"[^a-zA-Z0-9_]", "_", str(key)))
        if isinstance(v, bool):
            out.append((name, int(v)))
        elif isinstance(v, int | float):
            out.append((name, v))
        elif isinstance(v, Mapping):
            out.extend(_numeric_leaves(v, name))
    return out


def _number(value: int | float) -> str:
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return str(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
