"""``Holding``: LoRaWAN uplinks the agent could not store yet, kept in memory (bounded) until it
can, and the gap records of those the bound made the gateway drop.

Theory of operation (the whole story: docs/gateway-sources.md, "When the disk is full")
---------------------------------------------------------------------------------------
A node frame that the agent cannot store (the outbox refused the batch: a full disk) is not
acked, so the node keeps it and sends it again. A LoRaWAN uplink has no such second chance:
the network server delivered it once and the node has moved on. So the ChirpStack source
keeps every uplink the agent settled as *not stored* (``Arrival.settled(False)``) or did not
take (its queue stayed full) here, and hands it again later (``take``), until the agent
settles it as stored.

The holding is bounded (``max_held`` uplinks, held and handed out again together; about
0.5 KB each). Past the bound the **oldest** held uplink is dropped (RELIABILITY.md rule 4:
drop oldest, count, mark the gap): ``dropped`` +1 and its records become a **gap record** in
the device's own stream, ``{"seq", "t": None, "kind": "gap", "dropped", "first_epoch",
"first_seq", "last_epoch", "last_seq"}`` keyed ``(device_id, epoch, first_seq)`` (the key of
the first record it replaces, which no other record can have), widened while it waits to
cover every later drop of that device and epoch. Gap records are handed out like uplinks and
kept until the agent settles them as stored. An uplink whose pack does not unpack, or whose
devEUI is not in the inventory, is dropped without a gap record: the pipeline would have
rejected it anyway (``dropped_unmarked``).

Thread-safe (one lock): the paho thread adds, the agent's thread settles, the source's retry
thread takes. Nothing here waits or does I/O.
"""

import threading
from collections import OrderedDict, deque

from gateway.pipeline import normalise_dev_eui
from protocol.lorapack_decode import unpack


class Holding:
    """Uplinks (opaque items whose ``arrival`` is an ``Arrival(LORAWAN)``) held for another
    try, at most ``max_held`` of them; ``devices``: devEUI -> device_id (for gap records).
    Raises ``ValueError`` for a ``max_held`` below 1."""

    def __init__(self, max_held=4096, devices=None):
        if isinstance(max_held, bool) or not isinstance(max_held, int) or max_held < 1:
            raise ValueError("max_held must be an int >= 1, got %r" % (max_held,))
        self.max_held = max_held
        self._devices = {}
        for eui, dev in dict(devices or {}).items():
            norm = normalise_dev_eui(eui)
            if norm is None:
                raise ValueError("devices: %r is not a 16-hex-digit devEUI" % (eui,))
            self._devices[norm] = dev
        self._lock = threading.Lock()
        self._held = deque()  # waiting for another try, oldest first
        self._out = 0  # handed out by take() and not settled yet
        self._gaps = OrderedDict()  # (device_id, epoch) -> gap record not handed out
        self._gaps_out = 0
        self.counts = {"held": 0, "retried": 0, "dropped": 0, "dropped_unmarked": 0,
                       "gap_records": 0}

    # -- adding ---------------------------------------------------------------------------
    def hold(self, item, retried=False):
        """Keep ``item`` for another try (``retried``: it was handed out by ``take``). Returns
        the item dropped to make room (the oldest held, or ``item`` itself when every held
        one is handed out), or None."""
        with self._lock:
            if retried:
                self._out -= 1
            else:
                self.counts["held"] += 1
            victim = None
            if len(self._held) + self._out >= self.max_held:
                victim = self._held.popleft() if self._held else item
                self._drop(victim)
            if victim is not item:
                self._held.append(item)
            return victim

    def stored(self, retried=True):
        """A handed-out item was stored: it leaves the holding."""
        if retried:
            with self._lock:
                self._out -= 1

    def _drop(self, item):
        self.counts["dropped"] += 1
        gap = gap_of(item.arrival, self._devices)
        if gap is None:
            self.counts["dropped_unmarked"] += 1
            return
        device_id, epoch, first, last, n = gap
        rec = self._gaps.get((device_id, epoch))
        if rec is None:
            self._gaps[(device_id, epoch)] = gap_record(epoch, first, last, n)
        else:
            rec["seq"] = rec["first_seq"] = min(rec["first_seq"], first)
            rec["last_seq"] = max(rec["last_seq"], last)
            rec["dropped"] += n

    # -- handing out ------------------------------------------------------------------------
    def take(self, limit):
        """Up to ``limit`` held items, oldest first (handed out: settle each with ``stored``
        or ``hold(item, retried=True)``)."""
        out = []
        with self._lock:
            while self._held and len(out) < limit:
                out.append(self._held.popleft())
            self._out += len(out)
            self.counts["retried"] += len(out)
        return out

    def take_gaps(self):
        """Every gap record waiting, as ``(device_id, record)`` (handed out: settle each with
        ``gap_stored`` or ``gap_refused``)."""
        with self._lock:
            out = [(dev, rec) for (dev, _), rec in self._gaps.items()]
            self._gaps.clear()
            self._gaps_out += len(out)
            return out

    def gap_stored(self):
        with self._lock:
            self._gaps_out -= 1
            self.counts["gap_records"] += 1

    def gap_refused(self, device_id, rec):
        """A gap record was not stored: it waits again (merged with any newer one)."""
        with self._lock:
            self._gaps_out -= 1
            key = (device_id, rec["first_epoch"])
            got = self._gaps.get(key)
            if got is None:
                self._gaps[key] = rec
            else:
                got["seq"] = got["first_seq"] = min(got["first_seq"], rec["first_seq"])
                got["last_seq"] = max(got["last_seq"], rec["last_seq"])
                got["dropped"] += rec["dropped"]

    # -- looking ----------------------------------------------------------------------------
    def pending(self):
        """``(uplinks held or handed out, gap records waiting or handed out)``."""
        with self._lock:
            return len(self._held) + self._out, len(self._gaps) + self._gaps_out

    def left(self):
        """``(uplinks, gap records)`` waiting and not handed out."""
        with self._lock:
            return len(self._held), len(self._gaps)

    def waiting(self):
        """True if something waits to be handed out."""
        with self._lock:
            return bool(self._held or self._gaps)


def gap_of(arrival, devices):
    """``(device_id, epoch, first_seq, last_seq, records)`` of a LoRaWAN arrival's pack, or
    None if its devEUI is unknown or its pack does not unpack."""
    dev = devices.get(normalise_dev_eui(arrival.dev_eui) or "")
    if dev is None:
        return None
    try:
        epoch, records = unpack(arrival.data)
    except Exception:  # noqa: BLE001 (PackError is documented; anything else is the bytes')
        return None
    seqs = [r["seq"] for r in records]
    return dev, epoch, min(seqs), max(seqs), len(records)


def gap_record(epoch, first, last, dropped):
    """A gap record (``protocol.senml``'s fields) for ``dropped`` records of ``epoch`` in
    ``first``..``last``; stored under the key of ``first``."""
    return {"seq": first, "t": None, "kind": "gap", "dropped": dropped, "first_epoch": epoch,
            "first_seq": first, "last_epoch": epoch, "last_seq": last}
