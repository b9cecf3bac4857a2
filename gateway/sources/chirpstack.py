"""``ChirpStackSource``: LoRaWAN uplinks from ChirpStack v4's MQTT integration.

Theory of operation
-------------------
ChirpStack publishes each uplink it accepted (MIC verified, frame counter checked, the
copies heard by several gateways merged) as a JSON event on
``application/{application_id}/device/{dev_eui}/event/up`` (REFERENCE.md §7.3). The source
subscribes that filter at QoS 1 with a persistent session (``site_mqtt.MQTTSubscription``:
TLS, reconnects, counters), parses each event with ChirpStack's own protobuf message
(``chirpstack_api.integration.UplinkEvent`` through ``google.protobuf.json_format``, unknown
fields ignored so newer ChirpStack versions still parse) and hands the agent an
``Arrival(LORAWAN)`` with the devEUI, the FRMPayload bytes and the ``deduplicationId``; the
pipeline unpacks the pack and de-duplicates on that id and on the record keys. There is no
``reply``: a LoRaWAN uplink's acknowledgement is the network's business.

``parse_up_event`` is pure and raises only ``EventError``, whose ``reason`` is counted
(``dropped.<reason>``): ``oversize`` (an event over 64 KiB), ``not_utf8``, ``json`` (not
JSON, or not an UplinkEvent), ``dev_eui`` (missing or not 16 hex digits), ``topic_mismatch``
(the topic names another device than the event), ``dedup_id`` (missing or over 128
characters), ``no_data`` (an empty FRMPayload), ``data_too_long`` (over 255 bytes: no LoRa
frame carries more), and ``other_port``: civicedge nodes send their packs on one FPort
(``UPLINK_FPORT``), and anything else (FPort 0 MAC commands, another application's data) is
not ours.

``received_s`` is the event's ``time`` (when ChirpStack received the uplink: its server
clock, NTP-synchronised) if present, else the gateway's own clock when trusted.

ChirpStack's MQTT integration publishes at QoS 0 by default; set ``qos = 1`` (and
``clean_session = false``) in its ``[integration.mqtt]`` section, or an uplink published
while the gateway is away is lost at the broker (docs/gateway-sources.md).
"""

from typing import NamedTuple

from chirpstack_api import integration
from google.protobuf import json_format

from gateway.pipeline import normalise_dev_eui
from gateway.sources import LORAWAN, Arrival, wall_or_none
from gateway.sources.site_mqtt import MQTTSubscription

# The FPort civicedge packs travel on: the node's link.lorawan.port default
# (firmware/app/config_schema.py) and every profile's [link.lorawan] port
# (hardware/profiles/*.toml); the LoRaWAN network-side test stub uses the same.
UPLINK_FPORT = 2
MAX_EVENT_BYTES = 65536   # an up event with a few dozen gateways' rxInfo is a few KiB
MAX_DATA_BYTES = 255      # the LoRa PHY header's payload length is one byte
MAX_DEDUP_ID = 128        # the pipeline's bound (a UUID is 36)
REASONS = ("oversize", "not_utf8", "json", "dev_eui", "topic_mismatch", "dedup_id",
           "no_data", "data_too_long", "other_port")


class EventError(ValueError):
    """An up event that is dropped; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason, detail=""):
        self.reason = reason
        super().__init__(reason + (": " + detail if detail else ""))


class Uplink(NamedTuple):
    dev_eui: str          # 16 lowercase hex digits
    data: bytes           # the FRMPayload
    dedup_id: str
    f_port: int
    time_s: float | None  # when ChirpStack received it (Unix s), if the event says


def up_topic_filter(application_id):
    """The subscription for ``application_id`` (a UUID, or "+" for every application)."""
    return "application/%s/device/+/event/up" % application_id


def dev_eui_of_topic(topic):
    """The devEUI segment of a ``application/<app>/device/<eui>/event/up`` topic, as given
    ("" if the topic has another shape)."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "application" or parts[2] != "device":
        return ""
    return parts[3]


def parse_up_event(payload, f_port=UPLINK_FPORT, topic_dev_eui=None):
    """The ``Uplink`` in a ChirpStack v4 ``up`` event (JSON bytes or text). ``topic_dev_eui``:
    the devEUI the topic names (``dev_eui_of_topic``), which must be the event's; None skips
    that check. Raises only ``EventError`` (its ``reason`` says why: module docstring)."""
    if len(payload) > MAX_EVENT_BYTES:
        raise EventError("oversize", "%d bytes" % len(payload))
    if isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise EventError("not_utf8") from None
    else:
        text = payload
    try:
        ev = json_format.Parse(text, integration.UplinkEvent(), ignore_unknown_fields=True)
    except Exception as e:  # ParseError, or RecursionError etc. from hostile nesting
        raise EventError("json", type(e).__name__) from None
    eui = normalise_dev_eui(ev.device_info.dev_eui)
    if eui is None:
        raise EventError("dev_eui", repr(ev.device_info.dev_eui[:40]))
    if topic_dev_eui is not None and normalise_dev_eui(topic_dev_eui) != eui:
        raise EventError("topic_mismatch", "topic %r, event %s" % (topic_dev_eui[:40], eui))
    dedup = ev.deduplication_id
    if not dedup or len(dedup) > MAX_DEDUP_ID:
        raise EventError("dedup_id", "%d characters" % len(dedup))
    if ev.f_port != f_port:
        raise EventError("other_port", "FPort %d" % ev.f_port)
    data = bytes(ev.data)
    if not data:
        raise EventError("no_data")
    if len(data) > MAX_DATA_BYTES:
        raise EventError("data_too_long", "%d bytes" % len(data))
    time_s = None
    if ev.HasField("time") and ev.time.seconds > 0:
        time_s = ev.time.seconds + ev.time.nanos / 1e9
    return Uplink(eui, data, dedup, ev.f_port, time_s)


class ChirpStackSource(MQTTSubscription):
    """Uplinks from ChirpStack's MQTT integration (module docstring). ``cs``: the
    ``gateway.config_types.ChirpStackSource``; ``password``: the MQTT password (None with a
    client certificate); ``clock`` gives ``received_s`` when an event has no time;
    ``f_port``: the FPort civicedge packs use. Keyword arguments as ``MQTTSubscription``.
    Raises ``ValueError`` if TLS verification is off."""

    def __init__(self, cs, password, clock, *, f_port=UPLINK_FPORT, **kw):
        MQTTSubscription.__init__(self, "chirpstack", cs.mqtt, password,
                                  up_topic_filter(cs.application_id), clock,
                                  ("uplinks",) + tuple("dropped." + r for r in REASONS),
                                  **kw)
        self.application_id = cs.application_id
        self.f_port = f_port

    def _on_payload(self, topic, payload):
        try:
            up = parse_up_event(payload, self.f_port, dev_eui_of_topic(topic))
        except EventError as e:
            self._counters.inc("dropped." + e.reason)  # no total beside: metrics sum the reasons
            return
        self._counters.inc("uplinks")
        received = up.time_s if up.time_s is not None else wall_or_none(self._clock)
        self._emit(Arrival(LORAWAN, up.data, self.name, dev_eui=up.dev_eui,
                           dedup_id=up.dedup_id, received_s=received))
