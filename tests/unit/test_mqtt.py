"""The MQTT sink's pure parts (topics, payloads, Home Assistant discovery), its [mqtt] config and
its bookkeeping with a stand-in client; the broker itself: tests/integration/test_mqtt_broker.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat

import pytest

from linkwatch.config import ConfigError, MqttConfig, loads
from linkwatch.config.filemode import has_secrets
from linkwatch.sinks import build_sinks
from linkwatch.sinks import mqtt_topics as topics
from linkwatch.sinks.mqtt import MqttSetupError, MqttSink, read_password, tls_context
from tests import statusdata

UPLINKS = """
[uplinks.fibre]
interface = "eth1"
[[uplinks.fibre.probes]]
type = "icmp"
target = "203.0.113.1"
[uplinks.lte]
interface = "wwan0"
priority = 2
[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.1"
"""


def mqtt(text: str) -> MqttConfig:
    return loads(f"[mqtt]\n{text}\n{UPLINKS}").mqtt


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        loads(f"[mqtt]\n{text}\n{UPLINKS}")
    return [str(i) for i in e.value.issues]


# ---- config ---------------------------------------------------------------------------------------


def test_no_mqtt_section_means_no_sink_and_defaults_fill_in_the_rest():
    cfg = loads(UPLINKS)
    assert cfg.mqtt == MqttConfig() and cfg.mqtt.host is None
    assert [s.name for s in build_sinks(cfg, lambda: None)] == ["log"]
    m = mqtt('host = "broker.lan"')
    assert (m.port, m.qos, m.keepalive, m.discovery, m.discovery_prefix, m.tls_check_hostname) == (
        None, 1, 30.0, True, "homeassistant", True)
    sinks = build_sinks(loads(f'[mqtt]\nhost = "broker.lan"\n{UPLINKS}'), lambda: None)
    assert [s.name for s in sinks] == ["log", "mqtt"]
    assert sinks[1].port == 1883 and MqttSink(mqtt('host = "b"\ntls = true'), lambda: None, []).port == 8883


def test_bad_values_are_reported_with_their_key_path_all_at_once():
    got = issues('host = "broker.lan:1883"\nport = 70000\nqos = 3\ntopic_prefix = "home/+/x"\nkeepalive = "1s"\n'
                 'discovery_prefix = "ha/"\nclient_id = "has space"\nreconnect_max = "10ms"\ntls = "yes"')
    assert [g.split(":")[0] for g in got] == ["mqtt.host", "mqtt.port", "mqtt.client_id", "mqtt.topic_prefix",
                                              "mqtt.qos", "mqtt.keepalive", "mqtt.reconnect_max", "mqtt.tls",
                                              "mqtt.discovery_prefix"]
    assert "the port is a key of its own" in got[0]
    assert "wildcards are for subscribers" in got[3]
    assert "an empty level" in got[-1]
    assert issues('hots = "x"')[0].startswith('mqtt.hots: unknown key "hots"') and 'did you mean "host"' in issues(
        'hots = "x"')[0]


def test_keys_that_belong_together_are_checked_against_each_other():
    assert issues('host = "b"\npassword = "secret1"') == [
        "mqtt.username: missing, expected a user name: a password is sent with one"]
    assert issues('host = "b"\nusername = "u"\npassword = "secret1"\npassword_file = "/etc/p"') == [
        "mqtt.password_file: got both password and password_file, expected one of them"]
    assert issues('host = "b"\ntls = true\ntls_cert_file = "/etc/c.pem"') == [
        "mqtt.tls_key_file: missing, expected it with tls_cert_file: a client certificate needs its key"]
    assert issues('host = "b"\ntls_ca_file = "/etc/ca.pem"') == [
        "mqtt.tls: got false, expected true: tls_ca_file is set, which only TLS uses"]
    assert issues('port = 1884') == [
        "mqtt.host: missing, expected the broker's host: port is set, and without a host nothing is published"]


def test_a_bad_password_is_never_echoed_and_a_password_makes_the_file_mode_matter():
    got = issues('host = "b"\nusername = "u"\npassword = "hunter 2"')
    assert got == ["mqtt.password: got a secret of 8 characters, expected a password: 1..256 printable ASCII "
                   "characters"]
    assert "hunter" not in repr(mqtt('host = "b"\nusername = "u"\npassword = "hunter2"'))
    assert has_secrets(loads(f'[mqtt]\nhost = "b"\nusername = "u"\npassword = "hunter2"\n{UPLINKS}'))
    assert not has_secrets(loads(f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "/etc/p"\n{UPLINKS}'))


def test_the_password_file_gives_its_first_line_and_a_missing_one_is_a_setup_error(tmp_path):
    path = tmp_path / "pw"
    path.write_text("s3cret\nignored\n")
    os.chmod(path, stat.S_IRUSR)
    assert read_password(mqtt(f'host = "b"\nusername = "u"\npassword_file = "{path}"')) == "s3cret"
    assert read_password(mqtt('host = "b"\nusername = "u"\npassword = "inline1"')) == "inline1"
    with pytest.raises(MqttSetupError, match="cannot read mqtt.password_file .*No such file"):
        read_password(mqtt(f'host = "b"\nusername = "u"\npassword_file = "{tmp_path}/none"'))
    with pytest.raises(MqttSetupError, match="mqtt TLS files"):
        tls_context(mqtt(f'host = "b"\ntls = true\ntls_ca_file = "{tmp_path}/no-ca.pem"'))
    ctx = tls_context(mqtt('host = "b"\ntls = true\ntls_check_hostname = false'))
    assert ctx.check_hostname is False and ctx.verify_mode.name == "CERT_REQUIRED"


# ---- topics and payloads ------------------------------------------------------------------------


def test_default_names_come_from_the_hostname_and_stay_the_same_across_restarts():
    lay = topics.layout(mqtt('host = "b"'), "gw.example.org")
    assert (lay.prefix, lay.client_id, lay.availability, lay.node_id) == (
        "linkwatch/gw", "linkwatch-gw", "linkwatch/gw/status", "linkwatch_gw")
    assert topics.layout(mqtt('host = "b"'), "gw.example.org") == lay
    own = topics.layout(mqtt('host = "b"\ntopic_prefix = "home/net/wan"\nclient_id = "rtr"\ndiscovery = false'), "x")
    assert (own.prefix, own.client_id, own.node_id, own.discovery_prefix) == ("home/net/wan", "rtr", "home_net_wan", None)


def test_state_messages_carry_each_uplinks_state_the_active_set_and_the_numbers():
    lay = topics.layout(mqtt('host = "b"'), "gw")
    msgs = topics.state_messages(lay, statusdata.make_status())
    assert msgs["linkwatch/gw/active"] == "wan1"
    assert (msgs["linkwatch/gw/uplink/wan1/state"], msgs["linkwatch/gw/uplink/wan1/usable"],
            msgs["linkwatch/gw/uplink/wan1/active"]) == ("UP", "true", "true")
    assert (msgs["linkwatch/gw/uplink/lte/state"], msgs["linkwatch/gw/uplink/lte/usable"],
            msgs["linkwatch/gw/uplink/lte/active"]) == ("DOWN", "false", "false")
    assert (msgs["linkwatch/gw/uplink/wan1/rtt_ms"], msgs["linkwatch/gw/uplink/wan1/loss_pct"]) == ("12.5", "0")
    assert (msgs["linkwatch/gw/uplink/lte/rtt_ms"], msgs["linkwatch/gw/uplink/lte/loss_pct"]) == ("None", "100")
    attrs = json.loads(msgs["linkwatch/gw/uplink/lte/attributes"])
    assert attrs["state"] == "DOWN" and attrs["reason"] == "3 failed rounds" and attrs["interface"] == "wwan0"
    none = topics.state_messages(lay, statusdata.make_status(active=[]))
    assert none["linkwatch/gw/active"] == "none"
    both = topics.state_messages(lay, statusdata.make_status(active=["wan1", "lte"]))
    assert both["linkwatch/gw/active"] == "wan1,lte"


def test_only_changed_payloads_are_sent_again():
    sent = {"a": "1", "b": "2"}
    assert topics.changed({"a": "1", "b": "3", "c": "4"}, sent) == {"b": "3", "c": "4"}


def test_discovery_describes_every_entity_with_availability_and_one_device():
    lay = topics.layout(mqtt('host = "b"'), "gw")
    disc = {t: json.loads(p) for t, p in topics.discovery_messages(lay, ["fibre", "lte"], "9.9").items()}
    assert sorted(disc) == sorted([
        "homeassistant/sensor/linkwatch_gw/active/config",
        *(f"homeassistant/binary_sensor/linkwatch_gw/{n}_usable/config" for n in ("fibre", "lte")),
        *(f"homeassistant/sensor/linkwatch_gw/{n}_{w}/config" for n in ("fibre", "lte") for w in ("state", "rtt", "loss"))])
    usable = disc["homeassistant/binary_sensor/linkwatch_gw/fibre_usable/config"]
    assert usable["device_class"] == "connectivity" and usable["state_topic"] == "linkwatch/gw/uplink/fibre/usable"
    assert (usable["payload_on"], usable["payload_off"]) == ("true", "false")
    assert usable["json_attributes_topic"] == "linkwatch/gw/uplink/fibre/attributes"
    rtt = disc["homeassistant/sensor/linkwatch_gw/lte_rtt/config"]
    assert (rtt["unit_of_measurement"], rtt["state_topic"]) == ("ms", "linkwatch/gw/uplink/lte/rtt_ms")
    assert disc["homeassistant/sensor/linkwatch_gw/lte_loss/config"]["unit_of_measurement"] == "%"
    assert usable["default_entity_id"] == "binary_sensor.linkwatch_gw_fibre_usable"  # object_id: gone in HA 2026.4
    ids = [c["unique_id"] for c in disc.values()]
    assert len(set(ids)) == len(ids) == 9 and all(i.startswith("linkwatch_gw_") for i in ids)
    for c in disc.values():
        assert c["availability_topic"] == "linkwatch/gw/status"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["device"] == {"identifiers": ["linkwatch_gw"], "name": "linkwatch gw", "manufacturer": "linkwatch",
                               "model": "multi-uplink failover", "sw_version": "9.9"}
    off = topics.layout(mqtt('host = "b"\ndiscovery = false'), "gw")
    assert topics.discovery_messages(off, ["fibre"], "9.9") == {}


# ---- the sink with a stand-in client ------------------------------------------------------------


class Info:
    def __init__(self, rc: int):
        self.rc = rc


class StandInClient:
    def __init__(self):
        self.sent: list[tuple[str, str, int, bool]] = []
        self.rc = 0

    def publish(self, topic, payload, qos, retain):
        self.sent.append((topic, payload, qos, retain))
        return Info(self.rc)


def connected_sink(status) -> tuple[MqttSink, StandInClient]:
    sink = MqttSink(mqtt('host = "b"\nqos = 0'), status, ["wan1", "lte"], hostname="gw")
    sink._client = client = StandInClient()
    sink._on_connected()
    return sink, client


def test_a_connect_publishes_discovery_then_the_whole_state_then_online_all_retained():
    sink, client = connected_sink(statusdata.make_status)
    published = [t for t, *_ in client.sent]
    assert published[:9] == list(topics.discovery_messages(sink.layout, ["wan1", "lte"], "x"))
    assert published[9:-1] == list(topics.state_messages(sink.layout, statusdata.make_status()))
    assert client.sent[-1] == ("linkwatch/gw/status", "online", 0, True)
    assert all(retain for *_, retain in client.sent)
    assert sink.stats()["connected"] is True and sink.stats()["published"] == len(client.sent)


def test_after_that_only_what_changed_goes_out_and_nothing_while_disconnected():
    current = {"s": statusdata.make_status()}
    sink, client = connected_sink(lambda: current["s"])
    client.sent.clear()
    assert sink.sync() == 0
    current["s"] = statusdata.make_status(
        [statusdata.uplink_dict("wan1", state="DOWN", active=False, rtt_ms=None, loss_pct=100.0),
         statusdata.uplink_dict("lte", active=True)], active=["lte"])
    sink.sync()
    got = dict((t, p) for t, p, *_ in client.sent)
    assert got["linkwatch/gw/active"] == "lte" and got["linkwatch/gw/uplink/wan1/state"] == "DOWN"
    assert got["linkwatch/gw/uplink/lte/state"] == "UP" and "linkwatch/gw/uplink/wan1/jitter_ms" not in got
    client.sent.clear()
    sink._on_disconnected()
    current["s"] = statusdata.make_status()
    assert sink.sync() == 0 and client.sent == [] and sink.stats()["skipped_offline"] == 1
    sink._on_connected()  # a reconnect: everything again, whatever was sent before
    assert len(client.sent) == 9 + len(topics.state_messages(sink.layout, current["s"])) + 1


def test_a_message_paho_would_not_take_is_counted_and_sent_again_next_time():
    sink, client = connected_sink(statusdata.make_status)
    client.sent.clear()
    client.rc = 15  # MQTT_ERR_QUEUE_SIZE
    current = statusdata.make_status(active=[])
    sink._status = lambda: current
    assert sink.sync() == 0 and sink.stats()["not_queued"] == 1
    client.rc = 0
    assert sink.sync() == 1 and client.sent[-1][:2] == ("linkwatch/gw/active", "none")


def test_an_unreadable_password_file_is_the_sinks_error_not_the_engines(tmp_path, caplog):
    cfg = mqtt(f'host = "127.0.0.1"\nport = 9\nusername = "u"\npassword_file = "{tmp_path}/missing"')
    sink = MqttSink(cfg, statusdata.make_status, ["wan1"], hostname="gw")

    async def run():
        from linkwatch.core.events import EngineEvent
        await sink.handle(EngineEvent(at=1.0, mono=1.0, what="started"))
        await asyncio.wait_for(sink._starting, 5)
        await sink.close()

    with caplog.at_level(logging.ERROR, logger="linkwatch.sinks.mqtt"):
        asyncio.run(run())
    assert sink.stats()["error"].startswith(f"cannot read mqtt.password_file {tmp_path}/missing")
    assert sink.stats()["connected"] is False and "nothing is published" in caplog.text


class Reason:
    def __init__(self, text: str, failure: bool):
        self.text, self.is_failure = text, failure

    def __str__(self) -> str:
        return self.text


def test_what_pahos_thread_reports_becomes_the_sinks_error_and_a_connect_clears_it(caplog):
    async def run():
        sink = MqttSink(mqtt('host = "broker.lan"\nport = 1884'), statusdata.make_status, ["wan1"], hostname="gw")
        sink._loop = asyncio.get_running_loop()
        sink._client = StandInClient()
        with caplog.at_level(logging.INFO, logger="linkwatch.sinks.mqtt"):
            sink._paho_attempt_failed(ConnectionRefusedError(111, "Connection refused"))
            sink._paho_attempt_failed(ConnectionRefusedError(111, "Connection refused"))
            first = sink.stats()
            sink._paho_connect(None, None, None, Reason("Not authorized", True), None)
            refused = sink.stats()
            sink._paho_disconnect(None, None, None, Reason("Unspecified error", True), None)  # after a refusal
            after_refusal = sink.stats()["error"]
            sink._paho_connect(None, None, None, Reason("Success", False), None)
            await asyncio.sleep(0)  # the loop publishes the state
            connected = sink.stats()
            sink._paho_disconnect(None, None, None, Reason("Unspecified error", True), None)
            await asyncio.sleep(0)
        return first, refused, after_refusal, connected, sink.stats()

    first, refused, after_refusal, connected, lost = asyncio.run(run())
    assert first["error"] == "cannot connect to broker.lan:1884: Connection refused" and first["failed_attempts"] == 2
    assert refused["error"] == "the broker broker.lan:1884 refused the connection: Not authorized"
    assert after_refusal == refused["error"]  # the broker's close after refusing says nothing new
    assert connected["connected"] is True and connected["error"] is None and connected["connects"] == 1
    assert connected["published"] > 0
    assert lost["connected"] is False and lost["error"] == "lost the connection to broker.lan:1884: Unspecified error"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # one per new error, not one per attempt
    assert any(r.getMessage().startswith("mqtt: connected to broker.lan:1884 (after ") for r in caplog.records)
