"""``SerialGatewayStub``: the gateway's side of a node's serial link, for tests and simulations
until the gateway agent exists: it owns a pty (the node's UART opens the other end), decodes
node frames (COBS + CRC-32, then the HMAC tag with the device key), decodes their SenML-CBOR
packs with ``cbor2`` (as the gateway will) and answers each good frame with an authenticated
ack. Bad input is counted by kind, never raised.
"""

import os
import threading
import tty

import cbor2

from protocol import frame, serial_link
from protocol.senml_decode import decode_pack


class SerialGatewayStub:
    def __init__(self, keys, ack=True):
        self.keys = dict(keys)  # device_id -> key bytes
        self.ack = ack  # a callable(frame) -> bool can refuse to ack (a lossy gateway)
        self.frames = []  # DataFrame, in arrival order
        self.records = []  # (device_id, boot_epoch, record)
        self.counters = {"frames": 0, "bad_frames": 0, "bad_packs": 0, "acks": 0}
        self._decoder = serial_link.SerialDecoder()
        self._stop = threading.Event()
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port_path = os.ttyname(slave)
        self._slave = slave  # kept open so the pty survives the node closing its end
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self._slave)

    def _run(self):
        import select

        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                continue
            for packet in self._decoder.feed(chunk):
                self._handle(packet)

    def _handle(self, packet):
        try:
            f = frame.decode_frame(packet, self.keys.get, expect=frame.TYPE_DATA)
        except frame.FrameError:
            self.counters["bad_frames"] += 1
            return
        self.counters["frames"] += 1
        try:
            pack = decode_pack(cbor2.loads(f.payload))
        except (ValueError, cbor2.CBORError):
            self.counters["bad_packs"] += 1
            return
        self.frames.append(f)
        for rec in pack["records"]:
            self.records.append((f.device_id, f.boot_epoch, rec))
        if self.ack is True or (callable(self.ack) and self.ack(f)):
            ack = frame.encode_ack(self.keys[f.device_id], f.device_id, f.boot_epoch, f.seq_through)
            os.write(self.master, serial_link.encode_packet(ack))
            self.counters["acks"] += 1
