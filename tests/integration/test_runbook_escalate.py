"""escalate and the financial planner on the real sandbox: an incident handed to the zone's
contacts with its diagnosis, and money faults in the game database handed over with the
affected bets and payments, without a row changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from floorwatch.inventory import load_inventory
from floorwatch.results import now_utc
from floorwatch.store import Store
from sandbox.control import Sandbox


def _incident(store_url: str, target: str, zone: str, fault: str) -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone=zone, fault_kind=fault,
                               severity="critical", summary=f"{target} {fault}",
                               onset_at=now - timedelta(seconds=10), detected_at=now).id


def _pending_rows(runbook_env: dict[str, Any], table: str, older_than_min: float) -> list[Any]:
    """Every column of the game DB's ``table`` rows pending for longer than given, by id."""
    url = load_inventory(runbook_env["inventory"]).target("game-db").connection.url
    assert url is not None
    stamp = "placed_at" if table == "bets" else "created_at"
    cutoff = now_utc() - timedelta(minutes=older_than_min)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(
                f"SELECT * FROM {table} WHERE state = 'pending' AND {stamp} < :cutoff ORDER BY id"
            ).bindparams(sa.bindparam("cutoff", type_=sa.DateTime(timezone=True)))
            return [tuple(row) for row in conn.execute(query, {"cutoff": cutoff})]
    finally:
        engine.dispose()


def _rows_by_id(runbook_env: dict[str, Any], table: str, ids: list[int]) -> list[Any]:
    url = load_inventory(runbook_env["inventory"]).target("game-db").connection.url
    assert url is not None
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT * FROM {table} WHERE id IN :ids ORDER BY id").bindparams(
                sa.bindparam("ids", expanding=True))
            return [tuple(row) for row in conn.execute(query, {"ids": ids})]
    finally:
        engine.dispose()


async def test_escalation_hands_the_incident_and_diagnosis_to_the_zone_contacts(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
) -> None:
    """provider-alpha down: the incident is escalated to ops-oncall and integrations, with a
    timeline event carrying the contacts and the diagnosis, and an escalate action row."""
    from runbooks.escalate import escalate

    sandbox_platform.inject("down", "provider-alpha")
    incident_id = _incident(runbook_env["store_url"], "provider-alpha", "providers",
                            "provider_outage")
    report = await escalate(target="provider-alpha", incident_id=incident_id,
                            requested_by="automation", reason="provider outage")

    assert report["outcome"] == "escalated", report
    assert report["reason"].startswith("provider outage. Diagnosis: provider-alpha: http")
    with Store(runbook_env["store_url"]) as s:
        incident = s.get_incident(incident_id)
        actions = s.actions_of(incident_id)
        events = s.events(incident_id)
    assert incident.state == "escalated"
    assert [a["step"] for a in actions] == ["diagnose", "escalate"]
    assert actions[1]["parameters"] == {"contacts": ["ops-oncall", "integrations"]}
    handoff = next(e for e in events if e.kind == "escalation")
    assert [c["name"] for c in handoff.data["contacts"]] == ["ops-oncall", "integrations"]
    assert handoff.data["contacts"][1] == {"name": "integrations", "channel": "email",
                                           "address": "integrations@sandbox.test"}
    assert handoff.data["diagnosis"] == report["diagnosis"]
    assert "provider_outage" in handoff.data["diagnosis"]
    assert "handed to ops-oncall, integrations" in handoff.message
    escalated = next(e for e in events if e.kind == "escalated")
    assert "escalated to ops-oncall, integrations" in escalated.message
    assert [e.kind for e in events][-1] == "report"
    keys = {a.key for a in await prefect_client.read_latest_artifacts()}
    assert "runbook-provider-alpha" in keys


async def test_stuck_bets_are_escalated_with_their_ids_and_left_untouched(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """stuck_bets on game-db: the escalation event and the report list every stuck bet's
    id, amount and age; the bets are still pending, unchanged, afterwards."""
    from runbooks.escalate import escalate

    sandbox_platform.inject("stuck_bets", "game-db")
    before = _pending_rows(runbook_env, "bets", 10)
    stuck_ids = [row[0] for row in before]
    assert len(stuck_ids) == 4
    incident_id = _incident(runbook_env["store_url"], "game-db", "online-core", "stuck_bets")

    report = await escalate(target="game-db", incident_id=incident_id,
                            requested_by="automation")

    assert report["outcome"] == "escalated", report
    for bet_id in stuck_ids:
        assert f"#{bet_id}" in report["reason"]
    assert "financial fault stuck_bets on game-db is never corrected" in report["reason"]
    with Store(runbook_env["store_url"]) as s:
        assert s.get_incident(incident_id).state == "escalated"
        assert [a["step"] for a in s.actions_of(incident_id)] == ["diagnose", "escalate"]
        events = s.events(incident_id)
    handoff = next(e for e in events if e.kind == "escalation")
    listed = handoff.data["affected"]["stuck_bets"]
    assert sorted(bet["id"] for bet in listed) == stuck_ids
    # the sandbox places them from 20 minutes ago, 40 s apart, oldest first
    ages = [bet["age_minutes"] for bet in listed]
    assert 20 <= ages[0] < 21
    assert ages[0] - ages[-1] == pytest.approx(2.0, abs=0.15)
    amounts = {row[0]: row[3] for row in before}  # id, round_id, player_id, amount_cents...
    assert {bet["id"]: bet["amount_cents"] for bet in listed} == amounts
    for bet_id in stuck_ids:
        assert f"#{bet_id}" in handoff.message
    final = next(e for e in events if e.kind == "report")
    assert all(f"#{bet_id}" in final.data["reason"] for bet_id in stuck_ids)
    # nothing in the game database was changed by the runbook
    assert _rows_by_id(runbook_env, "bets", stuck_ids) == before


async def test_stuck_payments_diagnosed_by_hand_are_escalated_with_their_ids(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """payments_stuck, diagnose_target on a payment_processing_delay incident: the financial
    planner escalates with each payment's id, amount and age; the payments stay pending."""
    from runbooks.diagnose_target import diagnose_target

    sandbox_platform.inject("payments_stuck", "game-db")
    before = _pending_rows(runbook_env, "payments", 15)
    payment_ids = [row[0] for row in before]
    assert len(payment_ids) == 3
    incident_id = _incident(runbook_env["store_url"], "game-db", "online-core",
                            "payment_processing_delay")

    report = await diagnose_target(target="game-db", incident_id=incident_id,
                                   **runbook_env["person"]("operator"))

    assert report["outcome"] == "escalated", report
    listed = report["evidence"]["financial"]["stuck_payments"]
    # oldest first: the sandbox writes them 25, 31 and 40 minutes old
    assert sorted(p["id"] for p in listed) == payment_ids
    assert [round(p["age_minutes"]) for p in listed] == [40, 31, 25]
    assert all(p["kind"] == "withdrawal" and p["amount_cents"] > 0 for p in listed)
    assert report["evidence"]["financial"]["stuck_payments_total"] == 3
    assert sorted(report["evidence"]["database"]["stuck_payment_ids"]) == payment_ids
    for payment_id in payment_ids:
        assert f"#{payment_id}" in report["reason"]
    with Store(runbook_env["store_url"]) as s:
        assert s.get_incident(incident_id).state == "escalated"
        handoff = next(e for e in s.events(incident_id) if e.kind == "escalation")
    assert sorted(p["id"] for p in handoff.data["affected"]["stuck_payments"]) == payment_ids
    assert [c["name"] for c in handoff.data["contacts"]] == ["ops-oncall", "devops", "backend"]
    assert _rows_by_id(runbook_env, "payments", payment_ids) == before


async def test_dry_run_escalation_hands_nothing_over(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """A dry run of escalate on stuck bets leaves the incident open, records no hand-off
    and changes no bet."""
    from runbooks.escalate import escalate

    sandbox_platform.inject("stuck_bets", "game-db")
    before = _pending_rows(runbook_env, "bets", 10)
    incident_id = _incident(runbook_env["store_url"], "game-db", "online-core", "stuck_bets")

    report = await escalate(target="game-db", incident_id=incident_id, dry_run=True,
                            **runbook_env["person"]("operator"))

    assert report["outcome"] == "dry_run"
    assert report["plan"] == []
    with Store(runbook_env["store_url"]) as s:
        assert s.get_incident(incident_id).state == "open"
        kinds = [e.kind for e in s.events(incident_id)]
        steps = [a["step"] for a in s.actions_of(incident_id)]
    assert "escalation" not in kinds
    assert "escalated" not in kinds
    assert steps == ["diagnose"]
    assert _rows_by_id(runbook_env, "bets", [row[0] for row in before]) == before
    assert sandbox_platform.status()["active_faults"].get("game-db") == ["stuck_bets"]
