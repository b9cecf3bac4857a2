"""``LoRaWANGatewayStub``: the network side of a node's LoRaWAN link, for tests and
simulations until the LoRaWAN network stand-in exists.

Pass it as the ``network`` callback of ``simulators.atmodem.ATModemEmulator`` and ``attach``
the emulator: every transmitted uplink is unpacked (``protocol.lorapack_decode.unpack``, as
the gateway's decoder will) and its records kept as ``(dev_eui, boot_epoch, record)``, in
arrival order (a record sent again after a missing ack appears again: de-duplicate by key).
A payload that does not unpack is counted in ``counters["bad_payloads"]``, never raised.
``queue_downlink(port, payload, after=n)`` holds a downlink, as a network server's queue
does, and hands it to the emulator for the receive window of the first uplink once more than
``n`` uplinks have arrived (like a network server, at most one per uplink).
"""

import threading

from protocol.lorapack_decode import PackError, unpack


class LoRaWANGatewayStub:
    def __init__(self, emulator=None, port=2):
        self.emulator = emulator
        self.port = port  # the FPort packs arrive on; other ports are counted, not unpacked
        self.uplinks = []  # simulators.atmodem_radio.Uplink, in arrival order
        self.records = []  # (dev_eui, boot_epoch, record)
        self.counters = {"uplinks": 0, "records": 0, "bad_payloads": 0, "other_ports": 0,
                         "downlinks_sent": 0}
        self._queue = []  # [after, port, payload]
        self._lock = threading.Lock()

    def attach(self, emulator):
        """Use ``emulator`` (an ``ATModemEmulator``) for queued downlinks; returns self."""
        self.emulator = emulator
        return self

    def queue_downlink(self, port, payload, after=0):
        """Send ``payload`` on ``port`` after the first uplink that follows ``after`` uplinks."""
        with self._lock:
            self._queue.append([after, port, bytes(payload)])

    def __call__(self, uplink):
        # Called on the emulator's thread, before the uplink's receive windows open.
        with self._lock:
            self.uplinks.append(uplink)
            self.counters["uplinks"] += 1
            n = self.counters["uplinks"]
            if uplink.port != self.port:
                self.counters["other_ports"] += 1
            else:
                try:
                    epoch, records = unpack(uplink.payload)
                except PackError:
                    self.counters["bad_payloads"] += 1
                else:
                    for rec in records:
                        self.records.append((uplink.dev_eui, epoch, rec))
                    self.counters["records"] += len(records)
            due = None
            for item in self._queue:
                if n > item[0]:
                    due = item
                    break
            if due is not None and self.emulator is not None:
                self._queue.remove(due)
                self.emulator.queue_downlink(due[1], due[2])
                self.counters["downlinks_sent"] += 1
