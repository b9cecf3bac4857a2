"""``NodeState``: the node's persistent state — boot epoch, seq high-water mark, boot count and
reason, configuration version, counters — and ``SlotFile``, the small power-loss-safe document
both this module and the flash log (``store.py``) keep their metadata in.

Theory of operation
-------------------
``SlotFile("<root>/state")`` keeps one small JSON document in two alternating files,
``state.0`` and ``state.1``. Each holds ``crc32 (u32 LE) | generation (u32 LE) | JSON``. A save
writes generation g+1 into the slot that does NOT hold the newest valid copy, so the newest
good copy is never touched while a write is in flight. Loading reads both, drops any whose CRC
fails (counted in ``bad``) and keeps the highest generation. On littlefs a file's new contents
are committed atomically at close (copy-on-write), so a power cut leaves the old or the new
slot; on a filesystem without that guarantee (CPython's ext4 under a crash) a torn slot fails
its CRC and the other slot — the state before the interrupted write began — is used. Either way
the state never goes backwards past the last completed save. Documents are kept under 120
bytes so littlefs stores them inline in the directory's metadata block (a save then programs
~160 bytes and erases a block only once per ~30 saves; a 129-byte file costs a block erase on
every save — measured, see docs/node-storage.md).

``NodeState`` rules (the record key is ``(device_id, boot_epoch, seq)``):

* ``boot()`` runs once per boot (cold, warm or deep-sleep wake), before anything is logged: it
  persists ``boot_epoch + 1`` together with ``seq`` reset to 0 and a first reservation of
  ``SEQ_BLOCK`` seqs, the boot count and the reason — one save per boot.
* ``take_seqs(n)`` hands out seqs from memory; when the reservation is used up it persists a
  new high-water mark (``SEQ_BLOCK`` ahead) *before* handing any of them out, so a seq handed
  out is always below the persisted mark. A power cut loses at most the unused remainder of a
  reservation (seqs skipped — allowed); it can never hand a seq out twice: the next boot has a
  new epoch, and a process that re-opens the state *without* booting (``resume``) continues
  from the persisted mark.
* If the seq space of an epoch (2**32) runs out, the epoch advances without a reboot.
* Both slot files present but unreadable (never seen on littlefs) cannot be recovered from
  themselves: ``boot(epoch_floor=...)`` takes the largest epoch the caller still knows (the
  flash log's ``max_epoch()``), and jumps ``LOST_EPOCH_JUMP`` past it so epochs used since the
  last good save are not reused. Counted in ``state_faults``.

Portable: MicroPython (ESP32, unix port) and CPython; only ``os``, ``json``, ``struct``,
``binascii``.
"""

import binascii
import json
import os
import struct

SEQ_BLOCK = 64  # seqs reserved per persisted high-water mark (flash wear: one save per 64)
SEQ_LIMIT = 1 << 32  # seq and boot_epoch are uint32 (issue 3 contract)
LOST_EPOCH_JUMP = 1 << 20  # ~10 years of 5-minute deep-sleep wakes
_SLOT_HEAD = "<II"  # crc32 of everything after it, generation
_SLOT_HEAD_LEN = 8


def join(root, name):
    """``root`` + "/" + ``name``, with ``root`` "/" (the ESP32's flash) giving "/name"."""
    return root.rstrip("/") + "/" + name


def ensure_dir(path):
    """Make directory ``path`` if missing (``OSError`` for anything but "exists")."""
    try:
        os.mkdir(path)
    except OSError:
        try:
            os.stat(path)
        except OSError:
            raise


def read_bytes(path):
    """The whole file, or None if it does not exist."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        return f.read()
    finally:
        f.close()


def write_bytes(path, data, mode="wb"):
    """Write (or with mode "ab" append) ``data`` and close: the commit point on littlefs.
    On CPython the data is also fsync'd; MicroPython has no ``os.fsync`` (close commits)."""
    f = open(path, mode)
    try:
        f.write(data)
        f.flush()
        fsync = getattr(os, "fsync", None)
        if fsync is not None:
            fsync(f.fileno())
    finally:
        f.close()


def dumps(obj):
    """Compact JSON bytes (no spaces), the same on both runtimes for ints and strings."""
    return json.dumps(obj, separators=(",", ":")).encode()


class SlotFile:
    """A small JSON document in two alternating CRC-checked files ``<path>.0``/``<path>.1``.

    ``load()`` → the newest valid document or None; ``save(doc)`` writes the other slot.
    ``found``: slot files present at load; ``bad``: of those, how many failed their check."""

    def __init__(self, path):
        self._paths = (path + ".0", path + ".1")
        self.gen = 0
        self._slot = 1  # slot with the newest valid copy; the next save goes to the other
        self.found = 0
        self.bad = 0

    def load(self):
        best = None
        bad_slot = 0
        self.found = self.bad = 0
        for i in (0, 1):
            data = read_bytes(self._paths[i])
            if data is None:
                continue
            self.found += 1
            parsed = _parse_slot(data)
            if parsed is None:
                self.bad += 1
                bad_slot = i
            elif best is None or parsed[0] > best[0]:
                best = (parsed[0], i, parsed[1])
        if best is None:  # nothing valid: the first save overwrites a bad slot, if any
            self.gen, self._slot = 0, 1 - bad_slot
            return None
        self.gen, self._slot = best[0], best[1]
        return best[2]

    def save(self, doc):
        """Persist ``doc`` (JSON-able dict) atomically: old or new survives a power cut."""
        gen = self.gen + 1
        rest = struct.pack("<I", gen) + dumps(doc)
        slot = 1 - self._slot
        write_bytes(self._paths[slot], struct.pack("<I", binascii.crc32(rest) & 0xFFFFFFFF) + rest)
        self.gen, self._slot = gen, slot


def _parse_slot(data):
    if len(data) < _SLOT_HEAD_LEN:
        return None
    crc, gen = struct.unpack(_SLOT_HEAD, data[:_SLOT_HEAD_LEN])
    if binascii.crc32(data[4:]) & 0xFFFFFFFF != crc:
        return None
    try:
        doc = json.loads(data[_SLOT_HEAD_LEN:])
    except ValueError:
        return None
    return (gen, doc) if isinstance(doc, dict) else None


class NodeState:
    """The node's persistent state under ``root`` (``/flash`` in the simulator, ``/`` on the
    ESP32): files ``state.0/1`` (epoch, seq mark, boots, reason, config version) and
    ``counters.0/1``.

    Attributes (read-only for callers): ``boot_epoch``, ``boot_count``, ``boot_reason``,
    ``config_version``, ``state_faults`` (slot files found corrupt, and lost-state
    recoveries, over the node's life)."""

    def __init__(self, root):
        self.root = root
        self._core = SlotFile(join(root, "state"))
        self._ctr = SlotFile(join(root, "counters"))
        doc = self._core.load()
        self._lost = doc is None and self._core.found > 0
        # One slot bad, one good: the bad one may have been a completed save one step ahead
        # (bit rot, not a torn write), so the next epoch used skips one to be safe.
        self._suspect = doc is not None and self._core.bad > 0
        doc = doc or {}
        self.boot_epoch = doc.get("e", 0)
        self._seq_hw = doc.get("s", 0)
        self.boot_count = doc.get("b", 0)
        self.boot_reason = doc.get("r")
        self.config_version = doc.get("v", 0)
        counters = self._ctr.load()
        self.state_faults = doc.get("f", 0) + self._core.bad + self._ctr.bad
        self._counters = counters if counters is not None else {}
        self._counters_dirty = False
        # Resuming without boot(): skip every seq a previous process may have handed out.
        self._next_seq = self._seq_hw

    # -- boot and seqs ---------------------------------------------------------------------
    def boot(self, reason=None, epoch_floor=0):
        """Start a new boot epoch and persist it (with a first seq reservation, the boot count
        and ``reason``, e.g. "deepsleep", "power_on", "watchdog") before returning it.

        ``epoch_floor``: the largest epoch known elsewhere (``RecordLog.max_epoch()``); the new
        epoch is above it. Raises ``OSError`` if the flash write fails (nothing may be logged
        then), ``ValueError`` if ``epoch_floor`` is not a non-negative int."""
        if not isinstance(epoch_floor, int) or epoch_floor < 0:
            raise ValueError("epoch_floor must be a non-negative int, got %r" % (epoch_floor,))
        before = self._fields()
        epoch = max(self.boot_epoch, epoch_floor)
        if self._lost:
            epoch += LOST_EPOCH_JUMP
            self.state_faults += 1
        elif self._suspect:
            epoch += 1
        try:
            self._start_epoch(epoch + 1)
            self.boot_count += 1
            self.boot_reason = reason
            self._save_core()
        except Exception:  # not persisted: nothing changed, so nothing can be logged under it
            self._restore(before)
            raise
        self._lost = self._suspect = False
        if self._ctr.bad:  # rewrite the torn counters slot now, so it is counted only once
            self._ctr.save(self._counters)
            self._ctr.bad = 0
        return self.boot_epoch

    def resume(self, epoch, next_seq, reason=None, epoch_floor=0):
        """Continue ``epoch`` at ``next_seq`` after a deep-sleep wake, from what RTC memory
        carried (``position()`` saved before the sleep): no new epoch, so a backlog batches
        into few frames, and no flash write while the seq reservation lasts.

        Only when ``epoch`` is the persisted epoch and ``next_seq`` lies within its persisted
        reservation (every seq below it was handed out under that reservation, so none can
        repeat); otherwise — stale or damaged RTC memory, a flash state in doubt — it is
        ``boot(reason, epoch_floor)``: a new epoch. Returns the epoch in force."""
        if (self._lost or self._suspect or epoch != self.boot_epoch or self.boot_epoch == 0
                or not isinstance(next_seq, int) or not 0 <= next_seq <= self._seq_hw
                or epoch < epoch_floor):
            return self.boot(reason, epoch_floor)
        self._next_seq = next_seq
        self.boot_reason = reason
        return self.boot_epoch

    def position(self):
        """``[boot_epoch, next_seq]``: what ``resume`` needs after a deep sleep (JSON-able)."""
        return [self.boot_epoch, self._next_seq]

    def take_seq(self):
        """One new seq in ``boot_epoch`` (read ``boot_epoch`` after this call)."""
        return self.take_seqs(1)

    def take_seqs(self, n):
        """Reserve ``n`` consecutive seqs; returns the first. They belong to ``boot_epoch`` as it
        is after this call (it advances only when an epoch's 2**32 seqs are used up).

        Persists a new high-water mark first when the reservation is exhausted (``OSError`` if
        that write fails: no seq is handed out then). ``ValueError`` for n < 1;
        ``RuntimeError`` if the node has never booted (``boot()`` first)."""
        if not isinstance(n, int) or n < 1 or n > SEQ_BLOCK * 16:
            raise ValueError("n must be an int in 1..%d, got %r" % (SEQ_BLOCK * 16, n))
        if self.boot_epoch == 0:
            raise RuntimeError("NodeState.boot() has never run: no boot epoch to number records in")
        before = self._fields()
        save = False
        try:
            if self._suspect:  # resuming over a bad slot: the persisted mark may be stale
                self._start_epoch(self.boot_epoch + 2)
                save = True
            first = self._next_seq
            if first + n > SEQ_LIMIT:  # the epoch's seqs are used up: a new epoch, no reboot
                self._start_epoch(self.boot_epoch + 1)
                first = 0
                save = True
            end = first + n
            if end > self._seq_hw:
                self._seq_hw = min(end + SEQ_BLOCK, SEQ_LIMIT)
                save = True
            if save:
                self._save_core()
        except Exception:  # not persisted: hand nothing out
            self._restore(before)
            raise
        self._suspect = False
        self._next_seq = end
        return first

    def _fields(self):
        return (self.boot_epoch, self._next_seq, self._seq_hw, self.boot_count, self.boot_reason,
                self.state_faults)

    def _restore(self, f):
        (self.boot_epoch, self._next_seq, self._seq_hw, self.boot_count, self.boot_reason,
         self.state_faults) = f

    def _start_epoch(self, epoch):
        if epoch >= SEQ_LIMIT:
            raise OverflowError("boot_epoch exhausted its uint32 range")
        self.boot_epoch = epoch
        self._next_seq = 0
        self._seq_hw = SEQ_BLOCK

    # -- configuration version ---------------------------------------------------------------
    def set_config_version(self, version):
        """Persist the configuration version now in force (int ≥ 0; ``ValueError`` otherwise)."""
        if not isinstance(version, int) or version < 0:
            raise ValueError("config version must be a non-negative int, got %r" % (version,))
        if version != self.config_version:
            self.config_version = version
            self._save_core()

    # -- counters ----------------------------------------------------------------------------
    def incr(self, name, n=1):
        """Add ``n`` to counter ``name`` in memory (``save()`` persists); returns the new value."""
        value = self._counters.get(name, 0) + n
        self._counters[name] = value
        self._counters_dirty = True
        return value

    def counter(self, name):
        return self._counters.get(name, 0)

    def counters(self):
        """A copy of all counters (name → int)."""
        return dict(self._counters)

    def save(self):
        """Persist the counters if any changed since the last save (one slot write)."""
        if self._counters_dirty:
            self._ctr.save(self._counters)
            self._counters_dirty = False

    def _save_core(self):
        self._core.save({"e": self.boot_epoch, "s": self._seq_hw, "b": self.boot_count,
                         "r": self.boot_reason, "v": self.config_version, "f": self.state_faults})

    def snapshot(self):
        """The persisted fields as a plain dict (for status records and tests)."""
        return {"boot_epoch": self.boot_epoch, "seq_high_water": self._seq_hw,
                "next_seq": self._next_seq, "boot_count": self.boot_count,
                "boot_reason": self.boot_reason, "config_version": self.config_version,
                "state_faults": self.state_faults}
