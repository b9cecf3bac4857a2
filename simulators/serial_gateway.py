"""``SerialGatewayStub``: the gateway's side of a node's serial link, for tests and simulations
until the gateway agent exists: it owns a pty (the node's UART opens the other end), splits
the byte stream into packets (COBS + CRC-32, ``protocol.serial_link``) and hands each to
``GatewayCore`` (``simulators/gateway_stub.py``: HMAC tag with the device key, SenML-CBOR
pack with ``cbor2``, the authenticated ack), writing the ack back. Bad input is counted by
kind, never raised.
"""

import os
import threading
import tty

from protocol import serial_link
from simulators.gateway_stub import GatewayCore


class SerialGatewayStub(GatewayCore):
    def __init__(self, keys, ack=True):
        GatewayCore.__init__(self, keys, ack)  # ack: a callable(frame) -> bool can refuse (a lossy gateway)
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
        ack = self.handle_frame(packet)
        if ack is not None:
            os.write(self.master, serial_link.encode_packet(ack))
