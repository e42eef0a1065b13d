"""Events: frozen dataclasses with a JSON-ready dict form that round-trips exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest

from linkwatch.core.events import (
    ActiveChanged,
    EngineEvent,
    EventError,
    UplinkSamples,
    UplinkStateChanged,
    event_from_dict,
    event_to_dict,
)

UPLINK = UplinkStateChanged(
    at=1718000000.25, mono=123.5, uplink="wan1", interface="eth1", old="UP", new="DOWN",
    reason="3 failed rounds", loss_pct=100.0, rtt_ms=None, jitter_ms=None,
)
UPLINK_NUMBERS = dataclasses.replace(UPLINK, new="DEGRADED", loss_pct=12.5, rtt_ms=41.2, jitter_ms=3.0)
ACTIVE = ActiveChanged(at=1718000000.5, mono=123.75, old=("wan1",), new=("wan2", "wan3"), reason="wan1 DOWN")
ACTIVE_NONE = ActiveChanged(at=1.0, mono=2.0, old=("wan1",), new=(), reason="every uplink down")
ENGINE = EngineEvent(at=1718000001.0, mono=124.0, what="reloaded", detail="2 uplinks, 1 changed")
ENGINE_DEFAULT = EngineEvent(at=1.0, mono=2.0, what="started")

SAMPLES = UplinkSamples(at=1.0, mono=2.0, uplink="wan1", start=0.5, sent=10, lost=1, loss_pct=10.0,
                        rtt_avg_ms=12.0, rtt_min_ms=10.0, rtt_max_ms=15.0, jitter_ms=1.0, rx_bytes=5, tx_bytes=6)
SAMPLES6 = dataclasses.replace(SAMPLES, family=6, rx_bytes=0, tx_bytes=0)
ALL = [UPLINK, UPLINK_NUMBERS, ACTIVE, ACTIVE_NONE, ENGINE, ENGINE_DEFAULT, SAMPLES, SAMPLES6]


def test_a_samples_event_of_another_family_is_refused():
    d = event_to_dict(SAMPLES6)
    for bad in (5, "6", True, None):
        with pytest.raises(EventError, match="samples.family: expected 4 or 6"):
            event_from_dict({**d, "family": bad})
    old = {k: v for k, v in event_to_dict(SAMPLES).items() if k != "family"}  # written before the family field
    assert event_from_dict(old) == SAMPLES


@pytest.mark.parametrize("ev", ALL, ids=lambda e: f"{e.kind}")
def test_round_trip_through_json(ev):
    d = event_to_dict(ev)
    back = event_from_dict(json.loads(json.dumps(d)))
    assert back == ev
    assert type(back) is type(ev)


def test_dict_carries_kind_and_lists():
    assert event_to_dict(UPLINK)["kind"] == "uplink_state"
    d = event_to_dict(ACTIVE)
    assert d == {
        "kind": "active_changed", "at": 1718000000.5, "mono": 123.75,
        "old": ["wan1"], "new": ["wan2", "wan3"], "reason": "wan1 DOWN",
    }
    assert event_to_dict(ENGINE)["kind"] == "engine"


def test_kind_is_a_class_constant_not_a_field():
    assert "kind" not in {f.name for f in dataclasses.fields(UplinkStateChanged)}
    assert {UplinkStateChanged.kind, ActiveChanged.kind, EngineEvent.kind} == {
        "uplink_state", "active_changed", "engine"}


def test_events_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        UPLINK.new = "UP"  # type: ignore[misc]


def test_engine_detail_may_be_omitted():
    d = event_to_dict(ENGINE_DEFAULT)
    del d["detail"]
    assert event_from_dict(d) == ENGINE_DEFAULT


def test_int_numbers_are_accepted_as_float():
    d = event_to_dict(UPLINK) | {"at": 5, "loss_pct": 40}
    ev = event_from_dict(d)
    assert ev.at == 5.0 and isinstance(ev.at, float)
    assert ev.loss_pct == 40.0 and isinstance(ev.loss_pct, float)


def _with(ev, **changes):
    return event_to_dict(ev) | changes


def _without(ev, key):
    d = event_to_dict(ev)
    del d[key]
    return d


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["not", "a", "dict"], "expected a dict"),
        ({"at": 1.0}, "unknown kind None"),
        (_with(UPLINK, kind="uplink_changed"), "'uplink_changed'"),
        (_without(UPLINK, "reason"), "uplink_state.reason: missing"),
        (_without(ACTIVE, "new"), "active_changed.new: missing"),
        (_with(UPLINK, at="yesterday"), "'yesterday'"),
        (_with(UPLINK, mono=True), "uplink_state.mono"),
        (_with(UPLINK, rtt_ms=float("nan")), "finite"),
        (_with(UPLINK, loss_pct="12%"), "'12%'"),
        (_with(UPLINK, new="down"), "unknown state 'down'"),
        (_with(UPLINK, uplink=7), "uplink_state.uplink"),
        (_with(ACTIVE, new="wan2"), "'wan2'"),
        (_with(ACTIVE, old=["wan1", 2]), "active_changed.old"),
        (_with(ENGINE, color="red"), "['color']"),
    ],
)
def test_bad_input_raises_value_error_naming_it(bad, needle):
    with pytest.raises(ValueError) as info:
        event_from_dict(bad)
    assert isinstance(info.value, EventError)
    assert needle in str(info.value)
