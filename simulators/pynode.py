"""``PyNode``: a CPython stand-in for a node's link behaviour, byte-exact on the wire, for
gateway tests and benchmarks where running the real firmware per node would cost too much.

It does what the firmware's log and link do (firmware/app/store.py, links/framed.py), in
memory: readings get consecutive seqs in one boot epoch and are kept until an authenticated
ack (``protocol.frame``, checked with ``ack_trims``) covers them; ``frame()`` makes the next
real data frame (a SenML-CBOR pack from ``protocol.senml``, HMAC-tagged with the device key)
from the oldest unacked readings; ``resend`` starts over from the oldest unacked one, as the
firmware does when an ack does not come. Forged, stale or malformed acks are counted and
ignored. What the gateway acked is ``acked_through``; tests check that every reading up to
there reached the upstream. The real firmware's own behaviour is tested in tests/e2e.

``MQTTPyNode`` carries the frames over a real broker exactly as a WiFi node does: it connects
as its own user, publishes frames QoS 1 to ``civicedge/node/<id>/up`` and takes acks from
``civicedge/node/<id>/ack``. CPython only.
"""

import threading
import time

import paho.mqtt.client as mqtt

from protocol import frame
from protocol.senml import encode_pack

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: readings' times start here


def reading_values(device_id, seq):
    """A deterministic classroom-CO2 reading for ``(device_id, seq)``: [[q, v, flag]...]."""
    h = sum(device_id.encode()) * 7919 + seq * 104729
    return [["co2_ppm", 420 + h % 1600, "ok"],
            ["temperature_c", round(18 + (h % 80) / 10, 1), "ok"],
            ["rh_percent", round(30 + (h % 400) / 10, 1), "ok"]]


class PyNode:
    """One node's readings and acks. ``key``: 16+ bytes; ``batch``: readings per frame."""

    def __init__(self, device_id, key, boot_epoch=1, batch=20, interval_s=120, first_seq=0):
        frame.check_device_id(device_id)
        self.device_id, self.key, self.boot_epoch = device_id, bytes(key), boot_epoch
        self.batch, self.interval_s = batch, interval_s
        self.records = []          # unacked readings, oldest first
        self.next_seq = first_seq  # the seq the next reading gets
        self.acked_through = None  # highest seq the gateway acked
        self.sent_through = None   # highest seq sent in a frame since the last resend
        self.max_sent = None       # highest seq ever sent (an ack beyond it is forged)
        self.counters = {"frames": 0, "acks": 0, "bad_acks": 0, "resends": 0}
        self._lock = threading.Lock()

    def produce(self, n=1):
        """``n`` new readings (kept until acked); returns the last seq."""
        with self._lock:
            for _ in range(n):
                seq = self.next_seq
                self.records.append({"seq": seq, "t": T0 + seq * self.interval_s,
                                     "values": reading_values(self.device_id, seq)})
                self.next_seq += 1
            return self.next_seq - 1

    def pending(self):
        with self._lock:
            return len(self.records)

    def frame(self):
        """The next data frame (bytes) of unsent readings, or None if all were sent."""
        with self._lock:
            start = 0
            if self.sent_through is not None:
                start = next((i for i, r in enumerate(self.records)
                              if r["seq"] > self.sent_through), len(self.records))
            recs = self.records[start:start + self.batch]
            if not recs:
                return None
            payload = encode_pack(self.device_id, self.boot_epoch, recs)
            first, last = recs[0]["seq"], recs[-1]["seq"]
            self.sent_through = last
            self.max_sent = last if self.max_sent is None else max(self.max_sent, last)
            self.counters["frames"] += 1
            return frame.encode_data(self.key, self.device_id, self.boot_epoch, first,
                                     last - first + 1, payload)

    def resend(self):
        """No ack came: the next ``frame()`` starts from the oldest unacked reading."""
        with self._lock:
            if self.records:
                self.counters["resends"] += 1
            self.sent_through = None

    def handle_ack(self, buf):
        """Verify an ack and trim what it covers; returns the seq it acked, or None."""
        with self._lock:
            try:
                ack = frame.decode_frame(buf, {self.device_id: self.key}.get,
                                         expect=frame.TYPE_ACK)
                through = frame.ack_trims(ack, self.boot_epoch, self.max_sent)
            except frame.FrameError:
                self.counters["bad_acks"] += 1
                return None
            self.records = [r for r in self.records if r["seq"] > through]
            if self.acked_through is None or through > self.acked_through:
                self.acked_through = through
            self.counters["acks"] += 1
            return through


class MQTTPyNode(PyNode):
    """A ``PyNode`` on a broker as MQTT user ``device_id`` with ``password``. ``pump()``
    publishes the next frame if none is awaiting its ack, or resends after ``ack_timeout_s``
    (wall seconds). Call ``close()`` when done."""

    def __init__(self, device_id, key, host, port, password, ack_timeout_s=2.0, **kw):
        super().__init__(device_id, key, **kw)
        self.ack_timeout_s = ack_timeout_s
        self._waiting_since = None
        self._connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="node-" + device_id,
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.username_pw_set(device_id, password)
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self._connected.clear()
        c.on_message = self._on_message
        self.client = c
        c.connect_async(host, port, keepalive=10)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, reason, props):
        if not reason.is_failure:
            client.subscribe("civicedge/node/%s/ack" % self.device_id, qos=1)
            self._connected.set()

    def _on_message(self, client, userdata, msg):
        if self.handle_ack(msg.payload) is not None:
            self._waiting_since = None

    def wait_connected(self, timeout_s=10.0):
        return self._connected.wait(timeout_s)

    def pump(self):
        """Send what is due; returns True if a frame was published."""
        if not self._connected.is_set():
            return False
        now = time.monotonic()
        if self._waiting_since is not None:
            if now - self._waiting_since < self.ack_timeout_s:
                return False
            self.resend()
        buf = self.frame()
        if buf is None:
            self._waiting_since = None
            return False
        self.client.publish("civicedge/node/%s/up" % self.device_id, buf, qos=1)
        self._waiting_since = now
        return True

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()
