"""``Holding``: LoRaWAN uplinks the agent could not store yet, kept in memory (bounded) until it
can, and the drops (``gateway.outbox_gaps.Dropped``) of those the bound made the gateway drop.

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
drop oldest, count, mark the gap): ``dropped`` +1 and its records become a ``Dropped`` (device,
key range, record count), widened while it waits to cover every later drop of that device
and epoch. The gateway dropped them, not the node, so they are stored as the outbox's own
gap markers (``Outbox.mark_dropped``: counted in ``dropped_by_reason.full``, published as
``gateway_outbox`` gap messages with the exact count and keys), never as a node's gap record.
They are handed out with ``take_gaps`` and kept until settled with ``gaps_stored`` (or
merged back by ``gaps_refused`` while the disk stays full). An uplink whose pack does not
unpack, or whose devEUI is not in the inventory, is dropped without a marker: the pipeline
would have rejected it anyway (``dropped_unmarked``).

Thread-safe (one lock): the paho thread adds, the agent's thread settles, the source's retry
thread takes. Nothing here waits or does I/O.
"""

import threading
from collections import OrderedDict, deque

from gateway.outbox_gaps import Dropped
from gateway.pipeline import normalise_dev_eui
from protocol.lorapack_decode import unpack


class Holding:
    """Uplinks (opaque items whose ``arrival`` is an ``Arrival(LORAWAN)``) held for another
    try, at most ``max_held`` of them; ``devices``: devEUI -> device_id (for the drops).
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
        self._gaps = OrderedDict()  # (device_id, epoch) -> Dropped not handed out
        self._gaps_out = 0
        self.counts = {"held": 0, "retried": 0, "dropped": 0, "dropped_unmarked": 0,
                       "gap_markers": 0, "records_marked": 0}

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
        self._merge(Dropped(device_id, epoch, first, epoch, last, n))

    def _merge(self, d):
        key = (d.device_id, d.first_epoch)
        got = self._gaps.get(key)
        self._gaps[key] = d if got is None else got._replace(
            first_seq=min(got.first_seq, d.first_seq), last_seq=max(got.last_seq, d.last_seq),
            dropped=got.dropped + d.dropped)

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
        """Every drop waiting to be marked, as ``Dropped`` (one per device and epoch; handed
        out: settle them with ``gaps_stored`` or ``gaps_refused``)."""
        with self._lock:
            out = list(self._gaps.values())
            self._gaps.clear()
            self._gaps_out += len(out)
            return out

    def gaps_stored(self, drops):
        """The handed-out ``drops`` were marked in the outbox."""
        with self._lock:
            self._gaps_out -= len(drops)
            self.counts["gap_markers"] += len(drops)
            self.counts["records_marked"] += sum(d.dropped for d in drops)

    def gaps_refused(self, drops):
        """The handed-out ``drops`` were not marked: they wait again (merged with newer ones)."""
        with self._lock:
            self._gaps_out -= len(drops)
            for d in drops:
                self._merge(d)

    # -- looking ----------------------------------------------------------------------------
    def pending(self):
        """``(uplinks held or handed out, drops waiting or handed out)``."""
        with self._lock:
            return len(self._held) + self._out, len(self._gaps) + self._gaps_out

    def left(self):
        """``(uplinks, drops)`` waiting and not handed out."""
        with self._lock:
            return len(self._held), len(self._gaps)

    def waiting(self):
        """True if an uplink waits to be handed out (drops wait for ``take_gaps``)."""
        with self._lock:
            return bool(self._held)


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

