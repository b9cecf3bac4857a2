"""``GatewayCore``: what every gateway-side test stub does with a node frame, whatever carried
it (a pty for ``serial_gateway``, a broker for ``mqtt_gateway``), until the gateway agent
exists: verify the frame's HMAC tag with the device key (``protocol.frame``), decode its
SenML-CBOR pack with ``cbor2`` (as the gateway will) and ``protocol.senml_decode``, record
``(device_id, boot_epoch, record)`` and return the authenticated ack to send back. Bad input
is counted by kind (``bad_frames``, ``bad_packs``), never raised. Records are kept as they
arrive, duplicates included (a resent frame whose ack was lost); ``duplicates`` counts the
records whose key ``(device_id, boot_epoch, seq)`` had been seen, and ``unique_records()``
gives each key once. Thread-safe (the transports call it from their own threads). CPython.
"""

import threading

import cbor2

from protocol import frame
from protocol.senml_decode import decode_pack


class GatewayCore:
    def __init__(self, keys, ack=True):
        self.keys = dict(keys)  # device_id -> key bytes
        self.ack = ack  # True, False, or a callable(frame) -> bool (a lossy gateway)
        self.frames = []  # DataFrame, in arrival order
        self.records = []  # (device_id, boot_epoch, record), in arrival order, duplicates kept
        self.counters = {"frames": 0, "bad_frames": 0, "bad_packs": 0, "acks": 0, "duplicates": 0}
        self._seen = set()
        self._lock = threading.Lock()

    def handle_frame(self, packet, device_id=None):
        """The ack (bytes) to send for ``packet``, or None (bad frame or pack, or not acking).

        ``device_id``: who the transport says sent it (the MQTT topic); a frame naming
        another device is a bad frame even if its tag verifies."""
        with self._lock:
            try:
                f = frame.decode_frame(packet, self.keys.get, expect=frame.TYPE_DATA)
            except frame.FrameError:
                self.counters["bad_frames"] += 1
                return None
            if device_id is not None and f.device_id != device_id:
                self.counters["bad_frames"] += 1
                return None
            self.counters["frames"] += 1
            try:
                pack = decode_pack(cbor2.loads(f.payload))
            except (ValueError, cbor2.CBORError):
                self.counters["bad_packs"] += 1
                return None
            self.frames.append(f)
            for rec in pack["records"]:
                key = (f.device_id, f.boot_epoch, rec["seq"])
                if key in self._seen:
                    self.counters["duplicates"] += 1
                self._seen.add(key)
                self.records.append((f.device_id, f.boot_epoch, rec))
            if self.ack is True or (callable(self.ack) and self.ack(f)):
                self.counters["acks"] += 1
                return frame.ack_for(self.keys[f.device_id], f)
            return None

    def unique_records(self):
        """``records`` with each key once (the first arrival), in arrival order."""
        with self._lock:
            seen, out = set(), []
            for device_id, epoch, rec in self.records:
                key = (device_id, epoch, rec["seq"])
                if key not in seen:
                    seen.add(key)
                    out.append((device_id, epoch, rec))
            return out
