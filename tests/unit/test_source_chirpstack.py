"""ChirpStack v4 ``up`` events parsed with ChirpStack's own message (``chirpstack_api``):
the fields the gateway needs, and every malformed or foreign event dropped with a reason."""

import base64
import json

import pytest
from chirpstack_api import integration
from google.protobuf import json_format

from gateway.sources.chirpstack import (
    EventError,
    UPLINK_FPORT,
    dev_eui_of_topic,
    parse_up_event,
    up_topic_filter,
)

EUI = "0101010101010101"


def event(**over):
    """An up event as ChirpStack v4 writes it (protobuf JSON, camelCase), REFERENCE §7.3."""
    ev = {"deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
          "time": "2026-01-05T10:00:00.250Z",
          "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                         "tenantName": "ChirpStack", "applicationId": "a1b2",
                         "applicationName": "legionella", "deviceName": "outlet-1",
                         "devEui": EUI, "deviceClassEnabled": "CLASS_A", "tags": {}},
          "devAddr": "00189440", "adr": True, "dr": 5, "fCnt": 42, "fPort": UPLINK_FPORT,
          "confirmed": True, "data": base64.b64encode(b"\x01\x02\x03").decode(), "object": {},
          "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36,
                      "snr": 10.5, "channel": 2, "context": "AQI=", "crcStatus": "CRC_OK"}],
          "txInfo": {"frequency": 868500000,
                     "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                             "codeRate": "CR_4_5"}}},
          "regionConfigId": "eu868", "someFutureField": {"x": 1}}
    for k, v in over.items():
        if v is None:
            ev.pop(k, None)
        else:
            ev[k] = v
    return json.dumps(ev).encode()


def test_a_chirpstack_event_gives_eui_data_dedup_id_and_time():
    up = parse_up_event(event(), topic_dev_eui=EUI)
    assert up.dev_eui == EUI and up.data == b"\x01\x02\x03" and up.f_port == 2
    assert up.dedup_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    assert up.time_s == 1767607200.25


def test_an_event_made_by_the_protobuf_message_itself_parses():
    ev = integration.UplinkEvent(deduplication_id="d-1", f_port=2, data=b"\xaa" * 51)
    ev.device_info.dev_eui = "70B3D57ED0000001"
    up = parse_up_event(json_format.MessageToJson(ev))
    assert (up.dev_eui, up.data, up.time_s) == ("70b3d57ed0000001", b"\xaa" * 51, None)


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xfe{}", "not_utf8"),
    (b"{not json", "json"),
    (b"[1, 2]", "json"),
    (event(fPort="two"), "json"),
    (event(data=123), "json"),
    (event(deviceInfo={"devEui": ""}), "dev_eui"),
    (event(deviceInfo=None), "dev_eui"),
    (event(deviceInfo={"devEui": "01010101"}), "dev_eui"),
    (event(deduplicationId=None), "dedup_id"),
    (event(deduplicationId="x" * 200), "dedup_id"),
    (event(fPort=None), "other_port"),      # FPort 0: MAC commands only
    (event(fPort=10), "other_port"),
    (event(data=None), "no_data"),
    (event(data=base64.b64encode(b"\x00" * 256).decode()), "data_too_long"),
    (b"{" + b" " * 70000 + b"}", "oversize"),
    (b"[" * 5000 + b"]" * 5000, "json"),    # nesting deeper than any parser's recursion
])
def test_malformed_or_foreign_events_are_dropped_with_a_reason(payload, reason):
    with pytest.raises(EventError) as e:
        parse_up_event(payload)
    assert e.value.reason == reason


def test_the_topic_must_name_the_events_device():
    assert dev_eui_of_topic("application/a1/device/0101010101010101/event/up") == EUI
    assert dev_eui_of_topic("application/a1/device/x/event") == ""
    with pytest.raises(EventError) as e:
        parse_up_event(event(), topic_dev_eui="0202020202020202")
    assert e.value.reason == "topic_mismatch"
    with pytest.raises(EventError):
        parse_up_event(event(), topic_dev_eui="")
    assert parse_up_event(event(), topic_dev_eui="01-01-01-01-01-01-01-01").dev_eui == EUI


def test_subscription_filter():
    assert up_topic_filter("+") == "application/+/device/+/event/up"
    assert up_topic_filter("3f1e") == "application/3f1e/device/+/event/up"
