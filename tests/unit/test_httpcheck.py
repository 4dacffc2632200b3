"""Pure evaluation of HTTP answers: status, body text, JSON paths and values, latency and
certificate thresholds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from floorwatch.catalogue import FaultKind
from floorwatch.errors import InventoryError
from floorwatch.httpcheck import HttpAnswer, evaluate, find_json_path, parse_json_path
from floorwatch.inventory import HttpProbe

BAD = FaultKind.API_INTEGRATION_ERROR
HEALTH = {"status": "ok", "service": "api-gateway", "upstreams": [{"name": "a", "up": True}]}


def http_probe(**fields: Any) -> HttpProbe:
    """An HttpProbe validated from plain fields, as the inventory loader builds one."""
    return HttpProbe.model_validate({"kind": "http", **fields})


def answer(
    body: Any = HEALTH, status: int = 200, latency_ms: float = 12.0,
    cert_days: float | None = None,
) -> HttpAnswer:
    """An answer whose body is ``body`` as JSON (bytes are taken as they are)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpAnswer(status=status, body=raw, latency_ms=latency_ms, cert_days=cert_days)


# json paths


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.status", ("status",)),
        ("$.data[0].id", ("data", 0, "id")),
        ("$.upstreams['payment-gateway'].status", ("upstreams", "payment-gateway", "status")),
        ('$["a b"][-1]', ("a b", -1)),
        ("$.failed_logins_5m", ("failed_logins_5m",)),
    ],
)
def test_supported_json_paths_parse_into_steps(path: str, steps: tuple[str | int, ...]) -> None:
    """Dotted names, indexes and quoted keys become the steps to follow."""
    assert parse_json_path(path) == steps


@pytest.mark.parametrize("path", ["status", "$.a..b", "$.a[*]", "$.a[?(@.x)]", "$[1:2]", "$.'x'"])
def test_unsupported_json_paths_are_inventory_errors(path: str) -> None:
    """A path outside the subset is refused with an InventoryError quoting it."""
    with pytest.raises(InventoryError, match="json_path"):
        parse_json_path(path)


def test_find_json_path_tells_missing_from_null() -> None:
    """A key holding null is found; a missing key, a bad index or a step into a scalar is not."""
    document = {"a": None, "b": [1, 2], "c": "text"}
    assert find_json_path(document, ("a",)) == (True, None)
    assert find_json_path(document, ("b", -1)) == (True, 2)
    assert find_json_path(document, ("b", 2)) == (False, None)
    assert find_json_path(document, ("x",)) == (False, None)
    assert find_json_path(document, ("c", "d")) == (False, None)
    assert find_json_path(document, ("b", "0")) == (False, None)


# healthy answers


def test_matching_answer_passes_with_its_measurements() -> None:
    """An expected status and JSON value pass, with status, latency, size and value reported."""
    probe = http_probe(expect={"json_path": "$.status", "json_equals": "ok"})
    verdict = evaluate(answer(latency_ms=12.345), probe, BAD)
    assert verdict.ok
    assert verdict.faults == ()
    assert verdict.message == ""
    body_size = len(json.dumps(HEALTH).encode())
    assert verdict.values == {"status": 200, "latency_ms": 12.3, "bytes": body_size,
                              "json_value": "ok"}


def test_non_json_body_passes_when_no_json_path_is_set() -> None:
    """Without a json_path, any body with the expected status passes."""
    verdict = evaluate(answer(b"<html>fine</html>"), http_probe(), BAD)
    assert verdict.ok


def test_other_expected_status_passes() -> None:
    """A probe expecting 204 passes on a 204."""
    verdict = evaluate(answer(b"", status=204), http_probe(expect={"status": 204}), BAD)
    assert verdict.ok


# wrong answers


def test_wrong_status_fails_without_judging_the_error_body() -> None:
    """A 503 fails naming the status only; its error page is not checked against json_path."""
    probe = http_probe(expect={"json_path": "$.status", "json_equals": "ok"})
    verdict = evaluate(answer({"error": "unavailable"}, status=503), probe, BAD)
    assert verdict.faults == (BAD,)
    assert verdict.message == "HTTP 503 (expected 200)"
    assert "json_value" not in verdict.values


def test_body_without_expected_text_fails() -> None:
    """body_contains that is not in the body fails with the text quoted."""
    verdict = evaluate(answer(b"all good"), http_probe(expect={"body_contains": "ready"}), BAD)
    assert verdict.faults == (BAD,)
    assert verdict.message == "body does not contain 'ready'"


def test_invalid_json_fails_quoting_the_body() -> None:
    """A truncated JSON document fails as not valid JSON, with the start of the body."""
    probe = http_probe(expect={"json_path": "$.status", "json_equals": "ok"})
    verdict = evaluate(answer(b'{"status": "ok", "data": [{"id": 1, "na'), probe, BAD)
    assert verdict.faults == (BAD,)
    assert verdict.message.startswith("body is not valid JSON (")
    assert '{"status": "ok"' in verdict.message


def test_missing_json_path_fails() -> None:
    """A json_path the document does not hold fails, naming the path."""
    probe = http_probe(expect={"json_path": "$.upstreams[3].name"})
    verdict = evaluate(answer(), probe, BAD)
    assert verdict.message == "$.upstreams[3].name is missing from the JSON body"


def test_different_json_value_fails_with_both_values() -> None:
    """A value other than json_equals fails showing what was found and what was expected."""
    probe = http_probe(expect={"json_path": "$.status", "json_equals": "ok"})
    verdict = evaluate(answer({"status": "degraded"}), probe, BAD)
    assert verdict.faults == (BAD,)
    assert verdict.message == '$.status is "degraded" (expected "ok")'
    assert verdict.values["json_value"] == "degraded"


@pytest.mark.parametrize(
    ("found", "expected", "same"),
    [
        (True, 1, False),
        (1, True, False),
        (1, 1.0, True),
        ("1", 1, False),
        ([1, {"a": True}], [1, {"a": True}], True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        (True, True, True),
    ],
)
def test_json_equals_compares_as_json_does(found: Any, expected: Any, same: bool) -> None:
    """true is not 1, 1 equals 1.0, and containers compare item by item."""
    probe = http_probe(expect={"json_path": "$.v", "json_equals": expected})
    assert evaluate(answer({"v": found}), probe, BAD).ok is same


def test_number_over_json_max_fails_with_the_probe_fault() -> None:
    """A number over json_max fails as the fault the caller chose (here security_alert)."""
    probe = http_probe(expect={"json_path": "$.failed_logins_5m", "json_max": 50})
    verdict = evaluate(answer({"failed_logins_5m": 483}), probe, FaultKind.SECURITY_ALERT)
    assert verdict.faults == (FaultKind.SECURITY_ALERT,)
    assert verdict.message == "$.failed_logins_5m is 483 (max 50)"
    assert verdict.values["json_value"] == 483


def test_number_at_json_max_passes() -> None:
    """json_max is inclusive: the limit itself passes."""
    probe = http_probe(expect={"json_path": "$.n", "json_max": 50})
    assert evaluate(answer({"n": 50}), probe, BAD).ok


@pytest.mark.parametrize("value", ["480", True, None, [1]])
def test_json_max_on_a_non_number_fails(value: Any) -> None:
    """json_max over text, a boolean, null or a list fails as not a number."""
    probe = http_probe(expect={"json_path": "$.n", "json_max": 50})
    verdict = evaluate(answer({"n": value}), probe, BAD)
    assert verdict.faults == (BAD,)
    assert "not a number" in verdict.message


def test_latency_over_threshold_fails() -> None:
    """An answer slower than thresholds.latency_ms fails, with both figures."""
    probe = http_probe(thresholds={"latency_ms": 1000})
    verdict = evaluate(answer(latency_ms=1523.4), probe, BAD)
    assert verdict.faults == (BAD,)
    assert verdict.message == "answered in 1523 ms (threshold 1000 ms)"


def test_every_problem_is_reported_once_in_one_message() -> None:
    """A wrong value and a slow answer give one fault and both problems."""
    probe = http_probe(
        expect={"json_path": "$.status", "json_equals": "ok"}, thresholds={"latency_ms": 100}
    )
    verdict = evaluate(answer({"status": "down"}, latency_ms=250), probe, BAD)
    assert verdict.faults == (BAD,)
    assert verdict.message == '$.status is "down" (expected "ok"); answered in 250 ms ' \
        "(threshold 100 ms)"


# certificates


def test_certificate_under_threshold_is_certificate_expiring_only() -> None:
    """A healthy answer whose certificate has 3 days left fails as certificate_expiring."""
    probe = http_probe(thresholds={"cert_days": 14})
    verdict = evaluate(answer(cert_days=3.04), probe, BAD)
    assert verdict.faults == (FaultKind.CERTIFICATE_EXPIRING,)
    assert verdict.values["cert_days"] == 3.04
    assert verdict.message == "certificate expires in 3.0 days (threshold 14 days)"


def test_expiring_certificate_adds_to_a_bad_answer() -> None:
    """A wrong status and an expiring certificate are both reported, bad answer first."""
    probe = http_probe(thresholds={"cert_days": 14})
    verdict = evaluate(answer(status=500, cert_days=1.0), probe, BAD)
    assert verdict.faults == (BAD, FaultKind.CERTIFICATE_EXPIRING)


def test_certificate_days_are_reported_without_a_threshold() -> None:
    """cert_days is measured for any TLS answer; without a threshold it never fails."""
    verdict = evaluate(answer(cert_days=2.0), http_probe(), BAD)
    assert verdict.ok
    assert verdict.values["cert_days"] == 2.0


def test_checked_containers_and_long_text_are_kept_short() -> None:
    """A JSON object at json_path is kept as short JSON text; long text is cut."""
    probe = http_probe(expect={"json_path": "$.v"})
    kept = evaluate(answer({"v": {"a": [1, 2]}}), probe, BAD).values["json_value"]
    assert kept == '{"a": [1, 2]}'
    long = evaluate(answer({"v": "x" * 500}), probe, BAD).values["json_value"]
    assert long == "x" * 80 + "…"
