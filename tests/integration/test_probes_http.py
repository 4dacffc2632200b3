"""The HTTP probe against the session sandbox's real HTTP services (uvicorn on loopback, the
payment gateway over TLS with its own CA) and the servers' game engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from floorwatch.catalogue import FaultKind
from floorwatch.inventory import HttpProbe, Inventory, Target
from floorwatch.results import ProbeResult
from sandbox.control import Sandbox
from sandbox.tls import create_authority
from tasks.probes import ProbeContext, run_probe

pytestmark = pytest.mark.integration

GATEWAY = "api-gateway"
PROVIDER = "provider-alpha"
PAYMENTS = "payment-gateway"
USERS = "user-service"
ENGINE = "app-primary-game-engine"
STATS_PATH = "/v1/sessions/stats"


async def probe(target: Target, index: int = 0, **changes: Any) -> ProbeResult:
    """Run the target's probe number ``index``, with ``changes`` applied to it."""
    spec = target.probes[index]
    assert isinstance(spec, HttpProbe)
    async with ProbeContext(zone="test") as ctx:
        return await run_probe(target, spec.model_copy(update=changes), ctx)


def with_ca(target: Target, bundle: Path | None) -> Target:
    """``target`` verified with another CA bundle (None: the system CAs)."""
    connection = target.connection.model_copy(update={"ca_bundle": bundle})
    return target.model_copy(update={"connection": connection})


@pytest.fixture
def http(sandbox_state: dict[str, Any], sandbox_inventory: Inventory) -> Inventory:
    """The sandbox inventory; every fault is healed after the test."""
    return sandbox_inventory


async def assert_recovers(box: Sandbox, name: str, target: Target, index: int = 0) -> None:
    """Heal ``name`` in the sandbox and check that the probe passes again."""
    box.heal(name)
    again = await probe(target, index)
    assert again.ok, again.error_message


# healthy services


async def test_healthy_service_passes_with_status_latency_size_and_json_value(
    http: Inventory,
) -> None:
    """A healthy plain-HTTP service passes and reports what was measured."""
    result = await probe(http.target(GATEWAY))
    assert result.ok, result.error_message
    assert result.probe_id == "http"
    assert result.values["status"] == 200
    assert result.values["json_value"] == "ok"
    assert result.values["bytes"] > 20
    assert 0 < result.values["latency_ms"] < 1000
    assert result.latency_ms == result.values["latency_ms"]
    assert "cert_days" not in result.values


async def test_healthy_tls_service_reports_days_left_on_its_certificate(http: Inventory) -> None:
    """The payment gateway, verified with the sandbox CA, passes with about 90 days left."""
    result = await probe(http.target(PAYMENTS))
    assert result.ok, result.error_message
    assert 89 < result.values["cert_days"] <= 90


async def test_probe_path_requests_that_path_on_the_url_origin(http: Inventory) -> None:
    """The login-failure probe asks /v1/sessions/stats and checks the number under json_max."""
    result = await probe(http.target(USERS), index=1)
    assert result.ok, result.error_message
    assert result.probe_id == f"http:{STATS_PATH}"
    assert isinstance(result.values["json_value"], int)
    assert result.values["json_value"] <= 50


# the service is down or does not answer


@pytest.mark.parametrize(
    ("name", "fault"),
    [(GATEWAY, FaultKind.SERVICE_DOWN), (PROVIDER, FaultKind.PROVIDER_OUTAGE)],
)
async def test_refused_connection_is_reported_by_target_kind(
    http: Inventory, sandbox_platform: Sandbox, name: str, fault: FaultKind
) -> None:
    """A closed port is a ConnectError: service_down, or provider_outage for a provider."""
    sandbox_platform.inject("down", name)
    result = await probe(http.target(name))
    assert not result.ok
    assert result.faults == (fault,)
    assert result.error_class == "ConnectError"
    assert "cannot connect" in (result.error_message or "")
    await assert_recovers(sandbox_platform, name, http.target(name))


async def test_answer_slower_than_timeout_is_a_probe_timeout(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """A provider slower than the probe's timeout is a ProbeTimeout: provider_outage."""
    sandbox_platform.inject("slow", PROVIDER)
    result = await probe(http.target(PROVIDER), timeout=0.5)
    assert result.faults == (FaultKind.PROVIDER_OUTAGE,)
    assert result.error_class == "ProbeTimeout"
    assert "within 0.5 s" in (result.error_message or "")
    assert result.latency_ms is not None
    assert result.latency_ms < 1000  # the probe's own timeout, well before run_probe's grace
    await assert_recovers(sandbox_platform, PROVIDER, http.target(PROVIDER))


async def test_hung_game_engine_times_out_as_service_down(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """A game engine that accepts connections but never answers is service_down."""
    sandbox_platform.inject("service_hang", "app-primary")
    result = await probe(http.target(ENGINE))
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_class == "ProbeTimeout"
    await assert_recovers(sandbox_platform, "app-primary", http.target(ENGINE))


async def test_crashed_game_engine_refuses_as_service_down(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """A killed game engine refuses connections: ConnectError, service_down."""
    sandbox_platform.inject("service_crash", "app-primary")
    result = await probe(http.target(ENGINE))
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_class == "ConnectError"
    await assert_recovers(sandbox_platform, "app-primary", http.target(ENGINE))


# the service answers, wrongly


async def test_answer_over_latency_threshold_is_an_integration_error(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """A gateway answering in about 1.5 s, over its 1,000 ms threshold, fails with the delay."""
    sandbox_platform.inject("slow", GATEWAY)
    result = await probe(http.target(GATEWAY))
    assert result.faults == (FaultKind.API_INTEGRATION_ERROR,)
    assert result.error_class is None  # it answered
    assert result.values["status"] == 200
    assert result.values["latency_ms"] >= 1400
    assert "threshold 1000 ms" in (result.error_message or "")
    await assert_recovers(sandbox_platform, GATEWAY, http.target(GATEWAY))


@pytest.mark.parametrize(
    ("name", "fault"),
    [(GATEWAY, FaultKind.API_INTEGRATION_ERROR), (PROVIDER, FaultKind.PROVIDER_OUTAGE)],
)
async def test_error_status_is_reported_with_the_status(
    http: Inventory, sandbox_platform: Sandbox, name: str, fault: FaultKind
) -> None:
    """A 503 fails with its status: api_integration_error, provider_outage for a provider."""
    sandbox_platform.inject("errors", name)  # the first request after injection fails
    result = await probe(http.target(name))
    assert result.faults == (fault,)
    assert result.values["status"] == 503
    assert "HTTP 503 (expected 200)" in (result.error_message or "")
    sandbox_platform.heal(name)
    again = await probe(http.target(name))
    assert again.ok, again.error_message


async def test_truncated_json_body_is_a_bad_answer(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """A 200 whose JSON stops midway fails as api_integration_error, quoting the body."""
    sandbox_platform.inject("bad_payload", GATEWAY)
    result = await probe(http.target(GATEWAY))
    assert result.faults == (FaultKind.API_INTEGRATION_ERROR,)
    assert result.values["status"] == 200
    assert "not valid JSON" in (result.error_message or "")
    assert '"status": "ok"' in (result.error_message or "")
    await assert_recovers(sandbox_platform, GATEWAY, http.target(GATEWAY))


async def test_login_spike_reports_the_probe_own_fault(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """Failed logins over json_max fail the stats probe as its inventory fault, security_alert."""
    users = http.target(USERS)
    sandbox_platform.inject("login_failures", USERS)
    result = await probe(users, index=1)
    assert result.faults == (FaultKind.SECURITY_ALERT,)
    assert result.values["json_value"] > 400
    assert "$.failed_logins_5m is" in (result.error_message or "")
    assert "(max 50)" in (result.error_message or "")
    health = await probe(users, index=0)
    assert health.ok, health.error_message  # the service itself is up
    await assert_recovers(sandbox_platform, USERS, users, index=1)


# TLS


async def test_certificate_close_to_expiry_is_certificate_expiring(
    http: Inventory, sandbox_platform: Sandbox
) -> None:
    """A certificate valid 3 more days, under the 14-day threshold, is certificate_expiring."""
    sandbox_platform.inject("cert_expiring", PAYMENTS)
    result = await probe(http.target(PAYMENTS))
    assert not result.ok
    assert result.faults == (FaultKind.CERTIFICATE_EXPIRING,)
    assert 2.9 < result.values["cert_days"] <= 3
    assert result.values["status"] == 200
    assert "threshold 14 days" in (result.error_message or "")
    await assert_recovers(sandbox_platform, PAYMENTS, http.target(PAYMENTS))


async def test_certificate_from_unknown_ca_fails_verification(
    http: Inventory, tmp_path: Path
) -> None:
    """Verified with another CA, the payment gateway is a ConnectError naming TLS verification."""
    other = create_authority(tmp_path / "other-ca")
    result = await probe(with_ca(http.target(PAYMENTS), other.cert_file))
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_class == "ConnectError"
    assert "TLS verification" in (result.error_message or "")
    assert "failed" in (result.error_message or "")


async def test_private_ca_is_not_trusted_without_its_bundle(http: Inventory) -> None:
    """Without its CA bundle (system CAs only), the sandbox certificate is refused."""
    result = await probe(with_ca(http.target(PAYMENTS), None))
    assert result.error_class == "ConnectError"
    assert "TLS verification" in (result.error_message or "")


async def test_missing_ca_bundle_is_named_in_the_error(http: Inventory, tmp_path: Path) -> None:
    """A CA bundle that cannot be read fails the probe with the bundle's path."""
    missing = tmp_path / "nowhere" / "ca.pem"
    result = await probe(with_ca(http.target(PAYMENTS), missing))
    assert not result.ok
    assert "cannot load CA bundle" in (result.error_message or "")
    assert str(missing) in (result.error_message or "")


async def test_expected_body_text_missing_fails_with_the_text(http: Inventory) -> None:
    """body_contains that the body lacks fails the probe, naming the text."""
    target = http.target(GATEWAY)
    spec = target.probes[0]
    assert isinstance(spec, HttpProbe)
    expect = spec.expect.model_copy(update={"body_contains": "maintenance-mode"})
    result = await probe(target, expect=expect)
    assert result.faults == (FaultKind.API_INTEGRATION_ERROR,)
    assert "does not contain 'maintenance-mode'" in (result.error_message or "")


async def test_answer_that_is_not_http_is_a_protocol_error(http: Inventory) -> None:
    """An HTTP probe pointed at an SSH server gets its banner: a ProtocolError, bad answer."""
    server = http.target("app-primary").connection
    target = http.target(GATEWAY)
    url = f"http://{server.host}:{server.port}/health"
    moved = target.model_copy(
        update={"connection": target.connection.model_copy(update={"url": url})}
    )
    result = await probe(moved)
    assert result.faults == (FaultKind.API_INTEGRATION_ERROR,)
    assert result.error_class == "ProtocolError"
    assert "malformed HTTP" in (result.error_message or "")
