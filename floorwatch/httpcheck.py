"""Pure evaluation of one HTTP answer against an ``HttpProbe``'s expectations and thresholds.

The probe in ``tasks/probes/http.py`` does the I/O and hands what it saw here as an
``HttpAnswer``; ``evaluate`` says what is wrong with it, if anything::

    verdict = evaluate(answer, probe, bad_answer_fault=FaultKind.API_INTEGRATION_ERROR)
    verdict.faults   # () when healthy
    verdict.values   # status, latency_ms, bytes, cert_days, json_value
    verdict.message  # "" when healthy, else every problem found, "; "-separated

JSON paths are a small subset of JSONPath: ``$``, then any of ``.name``, ``[0]`` or
``['name']`` (``["name"]``), such as ``$.upstreams['payment-gateway'].status`` or
``$.data[0].id``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from floorwatch.catalogue import FaultKind
from floorwatch.errors import InventoryError, Problem
from floorwatch.inventory import HttpProbe

__all__ = ["HttpAnswer", "HttpVerdict", "evaluate", "find_json_path", "parse_json_path"]

# How much of a body a message quotes: enough to recognise it, never a whole page.
_QUOTE_CHARS = 80

_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*)
      | \[(?P<index>-?[0-9]+)\]
      | \[(?P<quote>['"])(?P<key>(?:(?!(?P=quote)).)*)(?P=quote)\]""",
    re.VERBOSE,
)

# Marks "no value at this path", distinct from a JSON null.
_MISSING = object()


@dataclass(frozen=True)
class HttpAnswer:
    """What one HTTP request saw: status, body, elapsed time and, over TLS, the days left
    on the verified server certificate."""

    status: int
    body: bytes
    latency_ms: float
    cert_days: float | None = None


@dataclass(frozen=True)
class HttpVerdict:
    """The outcome of ``evaluate``: faults (empty when healthy), measurements, message."""

    faults: tuple[FaultKind, ...]
    values: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.faults


@lru_cache(maxsize=1024)  # a sweep evaluates the same few paths thousands of times
def parse_json_path(path: str) -> tuple[str | int, ...]:
    """The steps of ``path`` (``$.a.b[0]`` -> ``("a", "b", 0)``); InventoryError if
    it is outside the supported subset."""
    if not path.startswith("$"):
        raise _bad_path(path, "must start with '$'")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise _bad_path(
                path, f"cannot read {path[position:]!r} (use .name, [0] or ['name'] steps)"
            )
        if match["name"] is not None:
            steps.append(match["name"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(match["key"])
        position = match.end()
    return tuple(steps)


def _bad_path(path: str, reason: str) -> InventoryError:
    return InventoryError([Problem("inventory", None, "expect.json_path", f"{path!r} {reason}")])


def find_json_path(document: Any, steps: tuple[str | int, ...]) -> tuple[bool, Any]:
    """``(True, value)`` at ``steps`` in a parsed JSON ``document``, ``(False, None)`` if
    the path leads nowhere (a missing key, an index out of range, a step into a scalar)."""
    value: Any = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return False, None
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                return False, None
            value = value[step]
    return True, value


def evaluate(answer: HttpAnswer, probe: HttpProbe, bad_answer_fault: FaultKind) -> HttpVerdict:
    """Check ``answer`` against ``probe``'s expectations and thresholds.

    A wrong status, body, JSON document or a latency over the threshold are reported as
    ``bad_answer_fault`` (the probe's own ``fault`` or the target kind's natural one, chosen
    by the caller); a certificate closer to expiry than ``thresholds.cert_days`` adds
    ``certificate_expiring``. The body is only examined when the status is the expected one:
    an error page says nothing about the document the probe watches. A ``json_path``
    outside the supported subset raises InventoryError: it is the inventory that is wrong.
    """
    expect, thresholds = probe.expect, probe.thresholds
    values: dict[str, Any] = {
        "status": answer.status,
        "latency_ms": round(answer.latency_ms, 1),
        "bytes": len(answer.body),
    }
    if answer.cert_days is not None:
        values["cert_days"] = round(answer.cert_days, 2)
    problems: list[str] = []

    if answer.status != expect.status:
        problems.append(f"HTTP {answer.status} (expected {expect.status})")
    else:
        problems.extend(_check_body(answer.body, probe, values))

    if thresholds.latency_ms is not None and answer.latency_ms > thresholds.latency_ms:
        problems.append(
            f"answered in {answer.latency_ms:.0f} ms (threshold {thresholds.latency_ms:g} ms)"
        )
    faults: list[FaultKind] = [bad_answer_fault] if problems else []

    if (
        thresholds.cert_days is not None
        and answer.cert_days is not None
        and answer.cert_days < thresholds.cert_days
    ):
        problems.append(
            f"certificate expires in {answer.cert_days:.1f} days "
            f"(threshold {thresholds.cert_days} days)"
        )
        faults.append(FaultKind.CERTIFICATE_EXPIRING)
    return HttpVerdict(tuple(faults), values, "; ".join(problems))


def _check_body(body: bytes, probe: HttpProbe, values: dict[str, Any]) -> list[str]:
    """Problems with the body of an answer with the expected status."""
    expect = probe.expect
    problems: list[str] = []
    wanted = expect.body_contains
    if wanted is not None and wanted not in body.decode("utf-8", errors="replace"):
        problems.append(f"body does not contain {wanted!r}")
    if expect.json_path is None:
        return problems
    steps = parse_json_path(expect.json_path)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        # json.JSONDecodeError is a ValueError; its message says where the document broke.
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        problems.append(f"body is not valid JSON ({reason}): {_quote(body)}")
        return problems
    found, value = find_json_path(document, steps)
    if not found:
        problems.append(f"{expect.json_path} is missing from the JSON body")
        return problems
    values["json_value"] = _kept(value)
    if expect.json_equals is not None and not _same_json(value, expect.json_equals):
        problems.append(
            f"{expect.json_path} is {json.dumps(value)[:_QUOTE_CHARS]} "
            f"(expected {json.dumps(expect.json_equals)[:_QUOTE_CHARS]})"
        )
    if expect.json_max is not None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(
                f"{expect.json_path} is {json.dumps(value)[:_QUOTE_CHARS]}, not a number "
                f"(max {expect.json_max:g})"
            )
        elif value > expect.json_max:
            problems.append(f"{expect.json_path} is {value:g} (max {expect.json_max:g})")
    return problems


def _same_json(value: Any, expected: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` and ``1`` equals ``1.0``, as in JSON itself."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value is expected
    if isinstance(value, dict) and isinstance(expected, dict):
        return value.keys() == expected.keys() and all(
            _same_json(value[key], expected[key]) for key in value
        )
    if isinstance(value, list) and isinstance(expected, list):
        return len(value) == len(expected) and all(
            _same_json(a, b) for a, b in zip(value, expected, strict=True)
        )
    if isinstance(value, int | float) and isinstance(expected, int | float):
        return value == expected
    return type(value) is type(expected) and bool(value == expected)


def _kept(value: Any) -> Any:
    """The checked value as a result keeps it: numbers and short text as they are, long
    text and containers shortened, so one odd answer cannot bloat the store."""
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, str) and len(value) <= _QUOTE_CHARS:
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:_QUOTE_CHARS] + ("…" if len(text) > _QUOTE_CHARS else "")


def _quote(body: bytes) -> str:
    text = body[: _QUOTE_CHARS * 4].decode("utf-8", errors="replace")
    return repr(text[:_QUOTE_CHARS] + ("…" if len(body) > _QUOTE_CHARS else ""))
