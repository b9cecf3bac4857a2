"""``NetworkServer``: a ChirpStack v4 stand-in that publishes the application integration
events the real gateway's ``gateway.sources.chirpstack.ChirpStackSource`` consumes.

It sits at the end of the simulated LoRaWAN chain: modem emulator → ``lorawan_radio.Radio``
(``Radio.link``) → ``NetworkServer.receive(uplink, transmission)``, called on the modem's
thread as the frame starts, before its receive windows open. What it does, as ChirpStack
does (REFERENCE.md §7.3; chirpstack ``uplink/data.rs`` and ``storage/device.rs``):

- **De-duplication**: the copies of one frame heard by several gateways become one uplink
  set with one ``deduplicationId`` (a UUID) and one ``rxInfo`` entry per gateway (RSSI,
  SNR, channel, a packet-forwarder style ``context``). The radio hands over every copy of a
  frame at once, as ChirpStack's 200 ms ``deduplication_delay`` collects them; a frame that
  arrives again later is a new set and meets the frame-counter check.
- **Devices and sessions**: only DevEUIs in ``devices`` are served (``unknown_device``).
  ``join(dev_eui)`` accepts a join request from a known DevEUI only, and starts a new
  session (frame counter 0). The emulator picks its DevAddr itself, so a session is bound
  to the DevAddr of its first uplink; with ``require_join=False`` (the default, for an
  emulator that does not ask its network about joins) a DevAddr never seen for the device
  stands for a join the network accepted, and starts a new session too. A frame from an
  earlier session's DevAddr is dropped (``unknown_session``).
- **Frame counters**: an uplink whose FCnt is not greater than the last accepted one of
  its session is dropped — FCnt equal to the last: ``UPLINK_F_CNT_RETRANSMISSION``, lower:
  ``UPLINK_F_CNT_RESET`` — and reported as a ChirpStack ``log`` event
  (``application/{id}/device/{devEui}/event/log``), never as ``up``.
- **Up events**: ``chirpstack_api.integration.UplinkEvent`` (deviceInfo, devAddr, dr, fCnt,
  fPort, confirmed, data, rxInfo, txInfo, time = the frame's end on the virtual clock) as
  protobuf JSON (``MessageToJson``, camelCase) on
  ``application/{application_id}/device/{devEui}/event/up`` at QoS ``qos`` (1).
- **Confirmed uplinks and downlinks**: an accepted confirmed uplink is acknowledged in its
  RX window; ``queue_downlink(dev_eui, port, payload)`` (or a ChirpStack downlink command on
  ``application/{id}/device/{devEui}/command/down``) holds a downlink until that device's
  next accepted uplink, at most one per uplink. The verdict goes back to the modem through
  ``Radio.link``.

``broker_host=None`` runs it without MQTT (events only kept in ``events``). With a broker,
a paho client (MQTT 3.1.1, ``clean_session=False``) publishes; while the broker is away,
QoS 1 events wait in the client and go out on reconnection. ``tls``: None (loopback only)
or {``cafile``, optional ``client_certfile``/``client_keyfile``} (``make_test_tls``'s dict
will do: only its ``cafile`` is used); the broker's certificate and name are verified.
Identifiers derive from the seed and the frame, never from thread timing, so a run repeats.
"""

import base64
import hashlib
import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from chirpstack_api import common, gw, integration
from google.protobuf import json_format

from simulators.clock import DEFAULT_START_WALL_S

REGION_CONFIG_ID = "eu868"
LOG_CODES = {"retransmission": ("UPLINK_F_CNT_RETRANSMISSION", "Uplink was flagged as "
                                "re-transmission / frame-counter did not increment"),
             "reset": ("UPLINK_F_CNT_RESET", "Frame-counter reset or rollover detected")}
COUNTERS = ("uplink_sets", "copies", "duplicates_merged", "accepted", "acks",
            "dropped_unknown_device", "dropped_unknown_session", "dropped_fcnt_retransmission",
            "dropped_fcnt_reset", "joins", "joins_rejected", "sessions_implicit",
            "downlinks_queued", "downlinks_sent", "downlinks_from_mqtt", "downlinks_bad",
            "published", "published_while_disconnected", "publish_errors", "log_events")


def norm_eui(dev_eui):
    """A DevEUI as 16 lower-case hex digits (ChirpStack's form); ValueError otherwise."""
    e = str(dev_eui).replace(":", "").replace("-", "").strip().lower()
    if len(e) != 16 or any(c not in "0123456789abcdef" for c in e):
        raise ValueError("dev_eui must be 16 hex digits, got %r" % (dev_eui,))
    return e


class Verdict:
    """What the network made of one uplink set: ``accepted``, ``reason`` (why not),
    ``ack`` (acknowledge a confirmed uplink), ``downlink`` ((port, payload) or None),
    ``dedup_id``."""

    __slots__ = ("accepted", "reason", "ack", "downlink", "dedup_id")

    def __init__(self, accepted, reason=None, ack=False, downlink=None, dedup_id=None):
        self.accepted, self.reason, self.ack = accepted, reason, ack
        self.downlink, self.dedup_id = downlink, dedup_id

    def __repr__(self):
        return "Verdict(accepted=%r, reason=%r, ack=%r, downlink=%r)" % (
            self.accepted, self.reason, self.ack, self.downlink)


class _Session:
    __slots__ = ("dev_addr", "f_cnt_up", "joined", "old")

    def __init__(self):
        self.dev_addr, self.f_cnt_up, self.joined, self.old = None, 0, False, set()


class NetworkServer:
    """See the module docstring. ``devices``: {dev_eui: device_name}; ``clock``: the
    simulation's ``VirtualClock`` (event times); ``seed``: for the identifiers. Raises
    ``ValueError`` for a DevEUI that is not 16 hex digits."""

    def __init__(self, broker_host, port, user, password, application_id, devices, tls=None, *,
                 clock=None, seed=0, qos=1, client_id=None, require_join=False,
                 tenant_id="52f14cd4-c6f1-4fbd-8f87-4025e1d49242", tenant_name="ChirpStack",
                 application_name="civicedge", device_profile_id="f4e3a1c2-3b5d-4e6f-8a9b-0c1d2e3f4a5b",
                 device_profile_name="civicedge-node", keep_events=True, subscribe_downlinks=True,
                 keepalive_s=10):
        self.broker_host, self.port, self.user, self._password = broker_host, port, user, password
        self.application_id = str(application_id)
        self.devices = {norm_eui(k): str(v) for k, v in devices.items()}
        self.tls = tls
        self.clock = clock
        self.seed = seed
        self.qos = qos
        self.client_id = client_id or "chirpstack-sim-" + self.application_id[:8]
        self.require_join = require_join
        self.tenant = (tenant_id, tenant_name)
        self.application_name = application_name
        self.profile = (device_profile_id, device_profile_name)
        self.subscribe_downlinks = subscribe_downlinks
        self.keepalive_s = keepalive_s
        self.events = [] if keep_events else None  # (topic, json text), in publication order
        self.counters = {name: 0 for name in COUNTERS}
        self._sessions = {}
        self._downlinks = {}  # dev_eui -> [(port, payload)]
        self._infos = []
        self._client = None
        self._connected = self._subscribed = False
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        """Connect to the broker (in the background; paho reconnects by itself)."""
        if self.broker_host is None or self._client is not None:
            return self
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=False, protocol=mqtt.MQTTv311)
        if self.user is not None:
            c.username_pw_set(self.user, self._password)
        if self.tls:
            c.tls_set(ca_certs=self.tls["cafile"], certfile=self.tls.get("client_certfile"),
                      keyfile=self.tls.get("client_keyfile"))
        c.reconnect_delay_set(min_delay=0.05, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c
        c.connect_async(self.broker_host, self.port, keepalive=self.keepalive_s)
        c.loop_start()
        return self

    def stop(self):
        """Disconnect (events still queued in the client are dropped)."""
        c, self._client = self._client, None
        if c is not None:
            c.disconnect()
            c.loop_stop()
        self._connected = self._subscribed = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def connected(self):
        return self._connected

    @property
    def subscribed(self):
        """True once the broker granted the downlink-command subscription."""
        return self._subscribed

    def unpublished(self):
        """Events handed to the client that have not reached the broker yet."""
        with self._lock:
            self._infos = [i for i in self._infos if not i.is_published()]
            return len(self._infos)

    def wait_published(self, timeout_s=10.0):
        """Wait (wall time) until every event handed to the client reached the broker;
        True if they all did within ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while True:
            if not self.unpublished():
                return True
            if time.monotonic() > end:
                return False
            time.sleep(0.01)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            return
        self._connected = True
        if self.subscribe_downlinks:
            client.subscribe("application/%s/device/+/command/down" % self.application_id, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):
        self._subscribed = all(not rc.is_failure for rc in reason_codes)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self._connected = False

    def _on_message(self, client, userdata, msg):
        # ChirpStack's downlink command: {"devEui", "confirmed", "fPort", "data": base64}
        try:
            cmd = json.loads(msg.payload.decode("utf-8"))
            eui = norm_eui(cmd.get("devEui") or msg.topic.split("/")[3])
            data = base64.b64decode(cmd.get("data", ""), validate=True)
            self.queue_downlink(eui, int(cmd["fPort"]), data)
            ok = True
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            ok = False
        with self._lock:
            self.counters["downlinks_from_mqtt" if ok else "downlinks_bad"] += 1

    # -- the network side ----------------------------------------------------------------------
    def queue_downlink(self, dev_eui, port, payload, confirmed=False):
        """Hold a downlink for ``dev_eui``'s next accepted uplink (FPort 1..223). Confirmed
        downlinks are sent like unconfirmed ones (the modem models no downlink ACK)."""
        eui = norm_eui(dev_eui)
        if not isinstance(port, int) or not 1 <= port <= 223:
            raise ValueError("port must be 1..223, got %r" % (port,))
        if len(payload) > 242:
            raise ValueError("payload must be at most 242 bytes, got %d" % len(payload))
        with self._lock:
            self._downlinks.setdefault(eui, []).append((port, bytes(payload)))
            self.counters["downlinks_queued"] += 1

    def join(self, dev_eui, transmission=None):
        """A join request heard by a gateway: True (accepted, new session) for a device in
        ``devices``, else False."""
        eui = norm_eui(dev_eui)
        with self._lock:
            if eui not in self.devices:
                self.counters["joins_rejected"] += 1
                return False
            s = self._sessions.setdefault(eui, _Session())
            if s.dev_addr is not None:
                s.old.add(s.dev_addr)
            s.dev_addr, s.f_cnt_up, s.joined = None, 0, True
            self.counters["joins"] += 1
            return True

    def receive(self, up, transmission):
        """One uplink set: ``up`` (an ``atmodem_radio.Uplink``) and the radio's
        ``Transmission`` whose ``receptions`` are the gateways' copies. Returns a ``Verdict``."""
        with self._lock:
            copies = {}
            for r in transmission.receptions:  # one rxInfo per gateway, its best copy
                if r.gateway_id not in copies or r.snr_db > copies[r.gateway_id].snr_db:
                    copies[r.gateway_id] = r
            self.counters["uplink_sets"] += 1
            self.counters["copies"] += len(transmission.receptions)
            self.counters["duplicates_merged"] += max(0, len(transmission.receptions) - 1)
            try:
                eui = norm_eui(up.dev_eui)
            except ValueError:
                eui = None
            if eui not in self.devices:
                self.counters["dropped_unknown_device"] += 1
                return Verdict(False, "unknown_device")
            reason = self._session_check(eui, up)
            if reason is not None:
                return Verdict(False, reason)
            s = self._sessions[eui]
            dedup = self._uuid("up", eui, up.dev_addr, up.fcnt, transmission.start_us)
            if up.fcnt < s.f_cnt_up:
                kind = "retransmission" if up.fcnt == s.f_cnt_up - 1 else "reset"
                self.counters["dropped_fcnt_" + kind] += 1
                self._log_event(eui, kind, dedup, transmission)
                return Verdict(False, "fcnt_" + kind, dedup_id=dedup)
            s.f_cnt_up = up.fcnt + 1
            self.counters["accepted"] += 1
            self._publish(self._topic(eui, "up"),
                          self._up_json(eui, up, transmission, list(copies.values()), dedup))
            ack = bool(up.confirmed)
            self.counters["acks"] += 1 if ack else 0
            queue = self._downlinks.get(eui)
            downlink = queue.pop(0) if queue else None
            self.counters["downlinks_sent"] += 1 if downlink else 0
            return Verdict(True, None, ack, downlink, dedup)

    def _session_check(self, eui, up):
        s = self._sessions.setdefault(eui, _Session())
        if up.dev_addr in s.old:
            self.counters["dropped_unknown_session"] += 1
            return "unknown_session"  # a frame of a session a later join replaced
        if s.dev_addr == up.dev_addr:
            return None
        if self.require_join and not (s.joined and s.dev_addr is None):
            self.counters["dropped_unknown_session"] += 1
            return "unknown_session"
        if not (s.joined and s.dev_addr is None):
            self.counters["sessions_implicit"] += 1  # a join the network was not told about
            if s.dev_addr is not None:
                s.old.add(s.dev_addr)
            s.f_cnt_up = 0
        s.dev_addr, s.joined = up.dev_addr, True
        return None

    # -- events --------------------------------------------------------------------------------
    def _topic(self, eui, event):
        return "application/%s/device/%s/event/%s" % (self.application_id, eui, event)

    def _uuid(self, *parts):
        h = hashlib.blake2b(repr((self.seed,) + parts).encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=h, version=4))

    def _wall_at(self, at_us):
        if self.clock is None:
            return DEFAULT_START_WALL_S + at_us / 1e6
        return self.clock.wall_s() + (at_us - self.clock.now_us) / 1e6

    @staticmethod
    def _set_time(ts, wall_s):
        ts.seconds = int(wall_s)
        ts.nanos = int(round((wall_s - int(wall_s)) * 1e6)) * 1000

    def _device_info(self, info, eui):
        info.tenant_id, info.tenant_name = self.tenant
        info.application_id, info.application_name = self.application_id, self.application_name
        info.device_profile_id, info.device_profile_name = self.profile
        info.device_name = self.devices[eui]
        info.dev_eui = eui
        info.device_class_enabled = common.DeviceClass.CLASS_A

    def _up_json(self, eui, up, tx, copies, dedup):
        ev = integration.UplinkEvent(deduplication_id=dedup, dev_addr="%08x" % (up.dev_addr or 0),
                                     dr=up.dr, f_cnt=up.fcnt, f_port=up.port,
                                     confirmed=bool(up.confirmed), data=bytes(up.payload),
                                     region_config_id=REGION_CONFIG_ID)
        wall = self._wall_at(tx.end_us)
        self._set_time(ev.time, wall)
        self._device_info(ev.device_info, eui)
        for r in copies:
            rx = ev.rx_info.add()
            rx.gateway_id = r.gateway_id
            rx.uplink_id = int.from_bytes(hashlib.blake2b(("%s|%s" % (dedup, r.gateway_id)).encode(),
                                                          digest_size=4).digest(), "big")
            self._set_time(rx.gw_time, wall)
            self._set_time(rx.ns_time, wall)
            rx.rssi = int(round(r.rssi_dbm))
            rx.snr = round(r.snr_db, 1)
            rx.channel = max(r.channel, 0)
            rx.context = (tx.end_us & 0xFFFFFFFF).to_bytes(4, "big")  # the forwarder's tmst
            rx.crc_status = gw.CRCStatus.CRC_OK
        ev.tx_info.frequency = tx.freq_hz
        lora = ev.tx_info.modulation.lora
        lora.bandwidth, lora.spreading_factor, lora.code_rate = tx.bw_hz, tx.sf, gw.CodeRate.CR_4_5
        return json_format.MessageToJson(ev, indent=None)

    def _log_event(self, eui, kind, dedup, tx):
        code, text = LOG_CODES[kind]
        ev = integration.LogEvent(level=integration.LogLevel.WARNING,
                                  code=integration.LogCode.Value(code), description=text)
        ev.context["deduplication_id"] = dedup
        self._set_time(ev.time, self._wall_at(tx.end_us))
        self._device_info(ev.device_info, eui)
        self.counters["log_events"] += 1
        self._publish(self._topic(eui, "log"), json_format.MessageToJson(ev, indent=None))

    def _publish(self, topic, text):
        if self.events is not None:
            self.events.append((topic, text))
        c = self._client
        if c is None:
            return
        info = c.publish(topic, text, qos=self.qos)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.counters["published"] += 1
        elif info.rc == mqtt.MQTT_ERR_NO_CONN:  # kept in the client, sent on reconnection
            self.counters["published_while_disconnected"] += 1
        else:
            self.counters["publish_errors"] += 1
            return
        if len(self._infos) >= 1024:
            self._infos = [i for i in self._infos if not i.is_published()]
        self._infos.append(info)
