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

Nothing lost on the way in. The node does not send an uplink again, so the source holds on to
each one until it is safe: the PUBACK to the broker waits (``manual_ack``) until the agent
settles the arrival (``Arrival.settled``): stored (or rejected by the pipeline) -> PUBACK; a
gateway killed before that gets the event again from the broker (persistent session) and
the pipeline de-duplicates it. Not stored (the outbox refused the batch: a full disk), or not
taken (the agent's queue stayed full) -> the uplink moves to the source's bounded memory
(``gateway.sources.holding.Holding``, ``max_held``: the key ``sources.chirpstack.max_held``,
4096 by default), is PUBACKed (the broker must not become the buffer, RELIABILITY.md rule 3),
and a retry thread hands it to the agent again after 1 s, then up to every 30 s while the
disk stays full (``retried``). Past ``max_held`` the oldest
held uplink is dropped and counted (``dropped.held_full``). The gateway dropped it, not the
node, so its records are marked by a **gateway gap marker** (``gateway.outbox_gaps``:
``Outbox.mark_dropped``, counted in the outbox's ``dropped_by_reason.full``, published as a
``gateway_outbox`` gap message with the exact count and keys), not a node's gap record: the
agent calls ``store_gaps`` on its link timer (``gateway.agent_disk``) and the source once
more at ``stop``; a marker the full disk refuses waits in memory for the next try
(``gap_markers``, ``records_marked`` count what was stored). What is held lives in memory:
a gateway stopped or killed while the disk is full loses it (``lost_at_stop`` is counted
and logged at a stop).
"""

import functools
import logging
import threading
import time
from typing import NamedTuple

from chirpstack_api import integration
from google.protobuf import json_format

from gateway.config_types import MAX_HELD  # uplinks held while the disk is full (~0.5 KB each)
from gateway.pipeline import normalise_dev_eui
from gateway.sources import LORAWAN, Arrival, RetryDelay, wall_or_none
from gateway.sources.holding import Holding
from gateway.sources.site_mqtt import MQTTSubscription

log = logging.getLogger("civicedge.gateway.sources.chirpstack")

# The FPort civicedge packs travel on: the node's link.lorawan.port default
# (firmware/app/config_schema.py) and every profile's [link.lorawan] port
# (hardware/profiles/*.toml); the LoRaWAN network-side test stub uses the same.
UPLINK_FPORT = 2
MAX_EVENT_BYTES = 65536   # an up event with a few dozen gateways' rxInfo is a few KiB
MAX_DATA_BYTES = 255      # the LoRa PHY header's payload length is one byte
MAX_DEDUP_ID = 128        # the pipeline's bound (a UUID is 36)
REASONS = ("oversize", "not_utf8", "json", "dev_eui", "topic_mismatch", "dedup_id",
           "no_data", "data_too_long", "other_port")
RETRY_BATCH = 256         # held uplinks handed to the agent per try
_LOG_EVERY_S = 60.0


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


class _Held:
    """One uplink on its way: the arrival and the PUBACK still owed for it (None once sent)."""
    __slots__ = ("arrival", "owed")

    def __init__(self, arrival, owed):
        self.arrival, self.owed = arrival, owed


class ChirpStackSource(MQTTSubscription):
    """Uplinks from ChirpStack's MQTT integration (module docstring). ``cs``: the
    ``gateway.config_types.ChirpStackSource``; ``password``: the MQTT password (None with a
    client certificate); ``clock`` gives ``received_s`` when an event has no time;
    ``f_port``: the FPort civicedge packs use; ``devices``: devEUI -> device_id (the
    inventory's, for gap markers); ``max_held``: uplinks held while the agent cannot store
    them; ``retry_min_s``/``retry_max_s``: the delay between tries to hand them over again
    (doubling while they keep failing). Other keyword arguments as ``MQTTSubscription``.
    Raises ``ValueError`` if TLS verification is off or ``max_held`` < 1."""

    def __init__(self, cs, password, clock, *, f_port=UPLINK_FPORT, devices=None,
                 max_held=MAX_HELD, retry_min_s=1.0, retry_max_s=30.0, **kw):
        MQTTSubscription.__init__(self, "chirpstack", cs.mqtt, password,
                                  up_topic_filter(cs.application_id), clock,
                                  ("uplinks", "dropped.held_full", "lost_at_stop")
                                  + tuple("dropped." + r for r in REASONS),
                                  manual_ack=True, **kw)
        self.application_id = cs.application_id
        self.f_port = f_port
        self._holding = Holding(max_held, devices)
        self.max_held = max_held  # the bound (sources.chirpstack.max_held)
        self._delay = RetryDelay(retry_min_s, retry_max_s)
        self._halt, self._kick = threading.Event(), threading.Event()
        self._retry_ok = False  # an uplink was stored since the last try
        self._retrier = None
        self._logged_s = None
        self._mark = None  # the last store_gaps' mark (Outbox.mark_dropped), for the stop

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, sink):
        MQTTSubscription.start(self, sink)
        self._halt.clear()
        self._retrier = threading.Thread(target=self._retry_loop, name="chirpstack-retry",
                                         daemon=True)
        self._retrier.start()

    def stop(self, timeout_s=5.0):
        self._halt.set()
        self._kick.set()
        if self._retrier is not None:
            self._retrier.join(timeout_s)
            self._retrier = None
        MQTTSubscription.stop(self, timeout_s)
        if self._mark is not None:
            try:
                self.store_gaps(self._mark)  # the outbox is still open: mark what we can
            except Exception:  # noqa: BLE001 (a full disk: counted and logged below)
                pass
        uplinks, gaps = self._holding.left()  # handed out ones may still be stored at stop
        if uplinks or gaps:
            self._counters.inc("lost_at_stop", uplinks)
            log.error("stopping with %d uplink(s) held and %d drop(s) not marked, in memory "
                      "(the outbox could not store them: is the disk full?); they are lost",
                      uplinks, gaps)

    def store_gaps(self, mark):
        """Mark the records of uplinks dropped past ``max_held`` with ``mark(drops)``
        (``Outbox.mark_dropped``; the agent calls this on its link timer). Returns the
        records marked (0 if none waited). What ``mark`` raises (``OutboxFull`` while the
        disk stays full) is raised again after the drops go back to wait for the next try."""
        self._mark = mark
        drops = self._holding.take_gaps()
        if not drops:
            return 0
        try:
            mark(drops)
        except BaseException:
            self._holding.gaps_refused(drops)
            raise
        self._holding.gaps_stored(drops)
        return sum(d.dropped for d in drops)

    def status(self):
        out = MQTTSubscription.status(self)
        held = self._holding.pending()[0]
        if held:
            out["detail"] += ("; %d uplink(s) held in memory: the outbox cannot store them (is "
                              "the disk full?)" % held)
        return out

    def counters(self):
        out = MQTTSubscription.counters(self)
        h = self._holding
        out.update(held=h.counts["held"], retried=h.counts["retried"],
                   gap_markers=h.counts["gap_markers"], records_marked=h.counts["records_marked"],
                   held_unmarked=h.counts["dropped_unmarked"], holding=sum(h.pending()))
        out["dropped.held_full"] = h.counts["dropped"]
        return out

    # -- the paho thread -----------------------------------------------------------------------
    def _on_payload(self, topic, payload, owed=None):
        try:
            up = parse_up_event(payload, self.f_port, dev_eui_of_topic(topic))
        except EventError as e:
            self._counters.inc("dropped." + e.reason)  # no total beside: metrics sum the reasons
            return False
        self._counters.inc("uplinks")
        received = up.time_s if up.time_s is not None else wall_or_none(self._clock)
        self._offer(_Held(Arrival(LORAWAN, up.data, self.name, dev_eui=up.dev_eui,
                                  dedup_id=up.dedup_id, received_s=received), owed), False)
        return True  # the PUBACK waits for the agent (_settle)

    # -- holding -----------------------------------------------------------------------------
    def _offer(self, item, retried):
        """Hand ``item`` to the agent; if it does not take it, hold it."""
        a = item.arrival._replace(settled=functools.partial(self._settle, item, retried))
        if not self._emit(a):
            self._keep(item, retried)

    def _settle(self, item, retried, stored):
        """``Arrival.settled`` (the agent's thread): PUBACK a stored uplink, hold the rest."""
        if stored:
            self._puback(item.owed)
            item.owed = None
            self._holding.stored(retried)
            self._retry_ok = True  # the agent stores again: the next try need not wait long
        else:
            self._keep(item, retried)

    def _keep(self, item, retried):
        self._puback(item.owed)  # held in memory from now on: the broker may forget it
        item.owed = None
        if self._holding.hold(item, retried) is not None:
            now = time.monotonic()
            if self._logged_s is None or now - self._logged_s >= _LOG_EVERY_S:
                self._logged_s = now
                log.error("%d uplink(s) held in memory (the outbox cannot store them: is the "
                          "disk full?); the oldest are being dropped (dropped.held_full %d), "
                          "marked by gateway gap markers: free disk space",
                          self._holding.pending()[0], self._holding.counts["dropped"])
        self._kick.set()

    def _retry_loop(self):
        """Hand held uplinks to the agent again: after ``retry_min_s``, then doubling up to
        ``retry_max_s`` while none of them gets stored; idle (no wake-ups) while nothing is
        held."""
        while not self._halt.is_set():
            if not self._holding.waiting():
                if self._holding.pending()[0] == 0:
                    self._delay.reset()
                self._kick.wait()
                self._kick.clear()
                continue
            if self._retry_ok:
                self._retry_ok = False
                self._delay.reset()
            if self._halt.wait(self._delay.next()):
                return
            for item in self._holding.take(RETRY_BATCH):
                self._offer(item, True)
