"""The sandbox HTTP services, driven by plain httpx / ssl clients on loopback, faults included."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from floorwatch.errors import SandboxError
from sandbox.http_services import (
    FAILED_LOGINS_SPIKE,
    GAMES,
    LOGIN_PASSWORD,
    VERSIONS,
    HttpServices,
)
from sandbox.tls import create_authority, issue_server_cert
from sandbox.topology import HOST, HTTP_SERVICES, Layout, free_base_port

pytestmark = pytest.mark.integration

PAYMENT = "payment-gateway"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServices]:
    """One running set of the five services for the module, always stopped afterwards."""
    layout = Layout(tmp_path_factory.mktemp("http") / "sb", base_port=free_base_port())
    component = HttpServices(layout)
    component.start()
    try:
        yield component
    finally:
        component.stop()


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses the shared services leaves them without faults."""
    yield
    if "services" in request.fixturenames:
        request.getfixturevalue("services").heal()


@pytest.fixture
def client(services: HttpServices) -> Iterator[httpx.Client]:
    """An httpx client that trusts only the sandbox CA, as Floorwatch's probes do."""
    verify = ssl.create_default_context(cafile=str(services.ca_file))
    with httpx.Client(verify=verify, timeout=5.0) as c:
        yield c


def _url(services: HttpServices, service: str, path: str = "") -> str:
    return str(services.describe()[service]["url"]) + path


def _peer_cert_days_left(port: int, ca_file: Path, hostname: str = HOST) -> float:
    """Days until the certificate served on ``port`` expires, read on a verified connection."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    return (not_after - time.time()) / 86400


def _listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state on this machine (from /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _connected_local_ports() -> set[int]:
    """Local TCP ports of established connections on this machine."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# ---------------------------------------------------------------------------- normal service


def test_every_service_answers_health_with_its_name_and_version(
    services: HttpServices, client: httpx.Client
) -> None:
    """GET /health on each of the five services answers 200 with status, name, version, uptime."""
    for service, info in services.describe().items():
        response = client.get(info["health_url"])
        assert response.status_code == 200, service
        body = response.json()
        assert body["status"] == "ok"
        assert body["service"] == service
        assert body["version"] == VERSIONS[service]
        assert body["uptime_s"] >= 0


def test_describe_gives_url_port_and_ca_file_for_the_tls_service_only(
    services: HttpServices,
) -> None:
    """describe() lists every service with its URL and port; only payment-gateway is HTTPS."""
    described = services.describe()
    assert set(described) == set(HTTP_SERVICES)
    json.dumps(described)  # JSON-ready, for sandbox.json
    for service, info in described.items():
        port = services.layout.http_port(service)
        assert info["kind"] == "http"
        assert info["port"] == port
        assert info["health_url"] == f"{info['url']}/health"
        if service == PAYMENT:
            assert info["url"] == f"https://127.0.0.1:{port}"
            assert info["tls"] is True
            assert Path(info["ca_file"]).is_file()
        else:
            assert info["url"] == f"http://127.0.0.1:{port}"
            assert info["tls"] is False
            assert info["ca_file"] is None


def test_payment_gateway_cert_verifies_with_the_sandbox_ca_for_ip_and_localhost(
    services: HttpServices,
) -> None:
    """The TLS certificate is valid about 90 days for 127.0.0.1 and localhost under the CA."""
    port = services.layout.http_port(PAYMENT)
    for hostname in (HOST, "localhost"):
        assert 89 < _peer_cert_days_left(port, services.ca_file, hostname) <= 90


def test_payment_gateway_is_not_trusted_without_the_sandbox_ca(services: HttpServices) -> None:
    """A client trusting only the system CAs refuses the sandbox certificate."""
    with httpx.Client(timeout=5.0) as plain, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        plain.get(_url(services, PAYMENT, "/health"))


def test_gateway_lobby_lists_the_games_of_both_providers(
    services: HttpServices, client: httpx.Client
) -> None:
    """GET /v1/lobby on the gateway returns every provider game tagged with its provider."""
    body = client.get(_url(services, "api-gateway", "/v1/lobby")).json()
    expected = {(g["id"], p) for p, games in GAMES.items() for g in games}
    assert {(g["id"], g["provider"]) for g in body["games"]} == expected
    assert body["count"] == len(expected)


def test_gateway_status_reports_every_upstream_up(
    services: HttpServices, client: httpx.Client
) -> None:
    """GET /v1/status on the gateway checks the four upstreams (TLS included) and finds them up."""
    body = client.get(_url(services, "api-gateway", "/v1/status")).json()
    assert body["status"] == "ok"
    assert set(body["upstreams"]) == set(HTTP_SERVICES) - {"api-gateway"}
    assert all(u["status"] == "up" and u["http_status"] == 200 for u in body["upstreams"].values())


def test_provider_lists_games_and_starts_a_round_with_a_seed_hash(
    services: HttpServices, client: httpx.Client
) -> None:
    """A provider lists its games and opens a round carrying a SHA-256 seed commitment."""
    games = client.get(_url(services, "provider-beta", "/v1/games")).json()["games"]
    assert [g["id"] for g in games] == [g["id"] for g in GAMES["provider-beta"]]
    response = client.post(
        _url(services, "provider-beta", "/v1/rounds"),
        json={"game_id": "beta-dragon-ways", "player_id": "p-17", "stake": 2.5},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["round_id"].startswith("rnd_")
    assert body["status"] == "open"
    assert len(body["rng_seed_hash"]) == 64
    int(body["rng_seed_hash"], 16)


def test_provider_rejects_a_round_for_a_game_it_does_not_have(
    services: HttpServices, client: httpx.Client
) -> None:
    """Starting a round for another provider's game answers 404 with a JSON error naming it."""
    response = client.post(
        _url(services, "provider-beta", "/v1/rounds"),
        json={"game_id": "alpha-starfall", "player_id": "p-17", "stake": 1},
    )
    assert response.status_code == 404
    assert "alpha-starfall" in response.json()["message"]


def test_payment_is_approved_and_read_back_by_id(
    services: HttpServices, client: httpx.Client
) -> None:
    """POST /v1/payments approves a payment that GET /v1/payments/{id} then returns."""
    created = client.post(
        _url(services, PAYMENT, "/v1/payments"),
        json={"amount": 25.0, "currency": "EUR", "player_id": "p-42"},
    )
    assert created.status_code == 201
    payment = created.json()
    assert payment["status"] == "approved"
    fetched = client.get(_url(services, PAYMENT, f"/v1/payments/{payment['id']}"))
    assert fetched.status_code == 200
    assert fetched.json() == payment
    assert client.get(_url(services, PAYMENT, "/v1/payments/pay_nope")).status_code == 404


def test_payment_with_a_body_that_is_not_json_is_refused_with_400(
    services: HttpServices, client: httpx.Client
) -> None:
    """A payment request whose body is not JSON gets a 400 JSON error saying so."""
    response = client.post(_url(services, PAYMENT, "/v1/payments"), content=b"amount=5")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_login_succeeds_with_the_sandbox_password_and_counts_in_stats(
    services: HttpServices, client: httpx.Client
) -> None:
    """A good login opens a session and a bad one is a 401; both show in the 5-minute stats."""
    stats_url = _url(services, "user-service", "/v1/sessions/stats")
    login_url = _url(services, "user-service", "/v1/login")
    before = client.get(stats_url).json()
    good = client.post(login_url, json={"username": "ana", "password": LOGIN_PASSWORD})
    assert good.status_code == 200
    assert good.json()["token"]
    bad = client.post(login_url, json={"username": "ana", "password": "wrong"})
    assert bad.status_code == 401
    after = client.get(stats_url).json()
    assert after["logins_5m"] == before["logins_5m"] + 1
    assert after["active_sessions"] == before["active_sessions"] + 1
    assert after["failed_logins_5m"] == before["failed_logins_5m"] + 1
    assert after["failed_logins_5m"] < 10


# ---------------------------------------------------------------------------- faults


def test_down_fault_refuses_connections_until_healed_again_and_again(
    services: HttpServices, client: httpx.Client
) -> None:
    """`down` closes the port (connect refused) and heal reopens it, three times over."""
    health = _url(services, "provider-alpha", "/health")
    for _ in range(3):
        services.inject("down", "provider-alpha")
        with pytest.raises(httpx.ConnectError):
            client.get(health)
        services.heal("provider-alpha")
        assert client.get(health).json()["status"] == "ok"


def test_down_fault_on_tls_service_closes_its_port_and_heal_serves_tls_again(
    services: HttpServices, client: httpx.Client
) -> None:
    """payment-gateway goes down (connect refused) and comes back serving verified TLS."""
    client.get(_url(services, PAYMENT, "/health"))  # leave a kept-alive connection behind
    services.inject("down", PAYMENT)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, services.layout.http_port(PAYMENT)), timeout=2).close()
    services.heal(PAYMENT)
    assert client.get(_url(services, PAYMENT, "/health")).json()["service"] == PAYMENT


def test_gateway_status_reports_a_down_upstream_as_degraded(
    services: HttpServices, client: httpx.Client
) -> None:
    """With user-service down, the gateway's status is degraded and names the refused upstream."""
    services.inject("down", "user-service")
    body = client.get(_url(services, "api-gateway", "/v1/status")).json()
    assert body["status"] == "degraded"
    assert body["upstreams"]["user-service"]["status"] == "down"
    assert "connect failed" in body["upstreams"]["user-service"]["error"]
    assert body["upstreams"]["provider-alpha"]["status"] == "up"


def test_slow_fault_adds_latency_until_healed(services: HttpServices, client: httpx.Client) -> None:
    """`slow` delays every request by at least 1.5 s; after heal answers are fast again."""
    health = _url(services, "user-service", "/health")
    services.inject("slow", "user-service")
    began = time.monotonic()
    assert client.get(health).status_code == 200
    assert time.monotonic() - began >= 1.5
    services.heal("user-service")
    began = time.monotonic()
    assert client.get(health).status_code == 200
    assert time.monotonic() - began < 0.5


def test_errors_fault_fails_every_other_request_with_a_json_503(
    services: HttpServices, client: httpx.Client
) -> None:
    """`errors` answers 503 with a JSON error on the 1st, 3rd, ... request; heal ends it."""
    games = _url(services, "provider-alpha", "/v1/games")
    services.inject("errors", "provider-alpha")
    statuses = []
    for _ in range(4):
        response = client.get(games)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.json()["error"] == "service_unavailable"
    assert statuses == [503, 200, 503, 200]
    services.heal("provider-alpha")
    assert {client.get(games).status_code for _ in range(3)} == {200}


def test_bad_payload_fault_returns_200_with_a_body_that_is_not_json(
    services: HttpServices, client: httpx.Client
) -> None:
    """`bad_payload` keeps status 200 but the JSON body is cut off; heal restores it."""
    health = _url(services, "api-gateway", "/health")
    services.inject("bad_payload", "api-gateway")
    response = client.get(health)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()
    services.heal("api-gateway")
    assert client.get(health).json()["status"] == "ok"


def test_cert_expiring_fault_serves_a_cert_with_under_7_days_left_until_healed(
    services: HttpServices, client: httpx.Client
) -> None:
    """`cert_expiring` restarts payment-gateway on a 3-day cert, still CA-valid; heal: 90 days."""
    url = _url(services, PAYMENT, "/health")
    services.inject("cert_expiring", PAYMENT)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(services.ca_file))) as fresh:
        with fresh.stream("GET", url) as response:
            assert response.status_code == 200
            peer = response.extensions["network_stream"].get_extra_info("ssl_object")
            not_after = ssl.cert_time_to_seconds(peer.getpeercert()["notAfter"])
        assert (not_after - time.time()) / 86400 < 7
    services.heal(PAYMENT)
    assert _peer_cert_days_left(services.layout.http_port(PAYMENT), services.ca_file) > 89
    assert client.get(url).json()["status"] == "ok"


def test_login_failures_fault_spikes_failed_logins_and_rejects_every_login(
    services: HttpServices, client: httpx.Client
) -> None:
    """`login_failures` turns good logins into 401s and reports hundreds of failed logins."""
    stats = _url(services, "user-service", "/v1/sessions/stats")
    login = _url(services, "user-service", "/v1/login")
    credentials = {"username": "ana", "password": LOGIN_PASSWORD}
    services.inject("login_failures", "user-service")
    assert client.post(login, json=credentials).status_code == 401
    assert client.get(stats).json()["failed_logins_5m"] >= FAILED_LOGINS_SPIKE
    services.heal("user-service")
    assert client.post(login, json=credentials).status_code == 200
    assert client.get(stats).json()["failed_logins_5m"] < 10


def test_injecting_a_fault_twice_is_harmless_and_listed_once(
    services: HttpServices, client: httpx.Client
) -> None:
    """A second `down` on a down service changes nothing; active_faults lists it once."""
    services.inject("down", "provider-beta")
    services.inject("down", "provider-beta")
    services.inject("bad_payload", "api-gateway")
    assert services.active_faults() == {
        "provider-beta": ["down"],
        "api-gateway": ["bad_payload"],
    }
    services.heal()
    assert services.active_faults() == {}
    assert client.get(_url(services, "provider-beta", "/health")).status_code == 200


@pytest.mark.parametrize(
    ("fault", "target", "message"),
    [
        ("meltdown", "api-gateway", "unknown fault 'meltdown'"),
        ("down", "casino-9", "does not apply to 'casino-9'"),
        ("cert_expiring", "api-gateway", "does not apply to 'api-gateway'"),
        ("login_failures", PAYMENT, "does not apply to 'payment-gateway'"),
    ],
)
def test_unknown_fault_or_target_is_refused_with_a_sandbox_error(
    services: HttpServices, fault: str, target: str, message: str
) -> None:
    """inject() names the unknown fault or the target it does not apply to."""
    with pytest.raises(SandboxError, match=message):
        services.inject(fault, target)
    assert services.active_faults() == {}


def test_heal_of_an_unknown_target_is_refused(services: HttpServices) -> None:
    """heal() on a service that does not exist raises a SandboxError naming it."""
    with pytest.raises(SandboxError, match="unknown target 'casino-9'"):
        services.heal("casino-9")


# ---------------------------------------------------------------------------- lifecycle


def test_stop_closes_every_port_and_connection_even_with_faults_in_force(tmp_path: Path) -> None:
    """stop() with faults, a slow request in flight and an idle TLS connection frees everything."""
    layout = Layout(tmp_path / "sb", base_port=free_base_port())
    component = HttpServices(layout)
    ports = {layout.http_port(s) for s in HTTP_SERVICES}
    outcome: list[str] = []
    try:
        component.start()
        component.inject("down", "provider-alpha")
        component.inject("cert_expiring", PAYMENT)
        component.inject("slow", "user-service")
        verify = ssl.create_default_context(cafile=str(component.ca_file))
        with httpx.Client(verify=verify, timeout=5.0) as idle:
            idle.get(f"https://{HOST}:{layout.http_port(PAYMENT)}/health")

            def slow_request() -> None:
                try:
                    httpx.get(f"http://{HOST}:{layout.http_port('user-service')}/health")
                    outcome.append("answered")
                except httpx.HTTPError as exc:
                    outcome.append(type(exc).__name__)

            in_flight = threading.Thread(target=slow_request)
            in_flight.start()
            time.sleep(0.3)
            began = time.monotonic()
            component.stop()
            stop_took = time.monotonic() - began
            in_flight.join(5)
            assert ports.isdisjoint(_listening_ports())
            assert ports.isdisjoint(_connected_local_ports())
    finally:
        component.stop()
    assert stop_took < 3
    assert outcome  # the in-flight request ended one way or the other, it did not hang
    assert component.thread_name not in {t.name for t in threading.enumerate()}
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=2).close()
        with socket.socket() as sock:  # servers bind with SO_REUSEADDR, as the next start will
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
    assert component.active_faults() == {}


def test_start_fails_naming_the_service_whose_port_is_taken_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """If user-service's port is in use, start() raises naming it and closes the others."""
    layout = Layout(tmp_path / "sb", base_port=free_base_port())
    component = HttpServices(layout)
    with socket.socket() as squatter:
        squatter.bind((HOST, layout.http_port("user-service")))
        squatter.listen()
        try:
            with pytest.raises(SandboxError, match=r"user-service cannot listen on 127\.0\.0\.1"):
                component.start()
        finally:
            component.stop()
        others = {layout.http_port(s) for s in HTTP_SERVICES if s != "user-service"}
        assert others.isdisjoint(_listening_ports())
    assert component.thread_name not in {t.name for t in threading.enumerate()}


def test_inject_before_start_is_refused(tmp_path: Path) -> None:
    """Injecting into services that are not running raises a SandboxError saying so."""
    component = HttpServices(Layout(tmp_path / "sb", base_port=free_base_port()))
    with pytest.raises(SandboxError, match="not running"):
        component.inject("slow", "api-gateway")


def test_services_restart_on_the_same_ports_after_stop(tmp_path: Path) -> None:
    """A stopped component starts again on the same ports with a fresh CA that verifies."""
    layout = Layout(tmp_path / "sb", base_port=free_base_port())
    component = HttpServices(layout)
    try:
        for _ in range(2):
            component.start()
            verify = ssl.create_default_context(cafile=str(component.ca_file))
            url = component.describe()[PAYMENT]["health_url"]
            assert httpx.get(url, verify=verify, timeout=5.0).json()["status"] == "ok"
            component.stop()
    finally:
        component.stop()


# ---------------------------------------------------------------------------- tls module


def test_issued_server_cert_names_ip_and_dns_and_chains_to_the_ca(tmp_path: Path) -> None:
    """A server certificate carries both SANs, the requested validity and the CA as issuer."""
    authority = create_authority(tmp_path)
    issued = issue_server_cert(authority, tmp_path, days=3)
    cert = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    cert.verify_directly_issued_by(authority.cert)
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=2.9) < left <= dt.timedelta(days=3)
    assert issued.key_file.stat().st_mode & 0o077 == 0


def test_issuing_a_cert_with_no_validity_is_refused(tmp_path: Path) -> None:
    """issue_server_cert() with zero days raises a SandboxError naming the bad validity."""
    with pytest.raises(SandboxError, match="positive validity"):
        issue_server_cert(create_authority(tmp_path), tmp_path, days=0)
