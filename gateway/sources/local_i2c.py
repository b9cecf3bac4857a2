"""``LocalI2CSource``: the sensors wired to the Pi itself, reported as a node would.

Theory of operation
-------------------
Every ``interval_s`` the source's thread reads each configured sensor through the shared
drivers (``drivers/``) over the Pi's bus (``gateway.i2c.SMBus2I2C``, or an injected bus such
as a ``SimI2CBus`` in tests), flags each value with ``protocol.quality`` exactly as a node
does, and logs one reading record ``{"seq", "t", "values"}``. Pending records are wrapped in
a real SenML-CBOR pack (``protocol.senml``) inside a real authenticated frame
(``protocol.frame``, signed with the device's key) and handed to the agent as an
``Arrival(FRAME)``: the Pi's sensors take the same path as a node's, through the tag check,
replay check, de-duplication, alarms and the outbox. ``reply`` verifies the pipeline's ack
(``frame.ack_trims``) and trims what it covers, so a reading the agent could not commit
(queue full, outbox full) is sent again with the next one. A status record with the
sampling counters follows every ``status_every_n`` cycles.

Sampling mirrors the node's (``gateway.sources.i2c_sensors``): bounded retries, and a sensor
that still fails gives its quantities as ``[q, None, "sensor_failed"]`` — never an invented
value — while the others keep reporting. A bus that cannot be opened fails them all the
same way, and ``status()`` says what to do.

Record keys. The boot epoch goes up by one every time the source is constructed and seqs
start at 0 in each epoch, so a key is never reused. With ``state_path`` the epoch and the
pending (not yet acked) records are kept in a small JSON file (written atomically: a
temporary file, fsync, rename; every cycle, after acks and at stop), so a restart neither
reuses an epoch nor loses a reading that was taken but not committed; records of an older
epoch are sent first. The composition root also passes ``epoch_floor``, the newest epoch the
pipeline accepted from this device (its replay state), so even a lost state file cannot
restart the epochs below it (the new readings would be taken for replays or duplicates).
Without ``state_path`` (tests) pending records live in memory only. Pending records are
bounded (``max_pending``): beyond it the oldest are dropped and a gap record says how many.
"""

import json
import os
import threading

from gateway.sources import FRAME, Arrival, Source, wall_or_none
from gateway.sources.i2c_sensors import LocalSampler, build_readers
from protocol import frame, quality, senml

STATE_VERSION = 1
_U32 = 0xFFFFFFFF


class LocalI2CSource(Source):
    """The Pi's own sensors as device ``i2c_cfg.device_id`` (module docstring).

    ``i2c_cfg``: a ``gateway.config_types.I2CSource``; ``device_key``: that device's key (the
    pipeline checks the frames' tags with it); ``bus``: an I2C bus object (None: open
    ``/dev/i2c-<i2c_cfg.bus>`` with smbus2 at the first cycle). Keyword arguments:
    ``state_path`` (the JSON state file; None: memory only), ``epoch_floor`` (the newest boot
    epoch the pipeline has accepted from this device, from its replay state: the new epoch is
    above it even if the state file was lost), ``sensor_options`` ({sensor name:
    dict} of part settings: an ads1115's ``calibration`` sheet and ``temperature_sensor``, an
    i2cxl's ``empty_cm``/``full_cm``...), ``quality_rules`` (a profile's ``[quality]``; None:
    ``protocol.quality.DEFAULT_RULES``), ``status_every_n`` cycles, ``max_pending`` records,
    ``max_batch_records`` per frame. Raises ``ValueError`` for a bad argument or setting,
    ``OSError`` if the state file cannot be read or written."""

    def __init__(self, i2c_cfg, device_key, clock, bus=None, *, state_path=None, epoch_floor=0,
                 sensor_options=None, quality_rules=None, status_every_n=30, max_pending=1024,
                 max_batch_records=16):
        Source.__init__(self, "i2c:%d" % i2c_cfg.bus, "cycles", "frames_sent", "records_acked",
                        "bad_acks", "sensor_failures", "nacks", "crc_errors", "timeouts",
                        "dropped", "state_errors", "bus_errors")
        self.device_id = i2c_cfg.device_id
        frame.check_device_id(self.device_id)
        if not isinstance(device_key, (bytes, bytearray)) or len(device_key) < frame.MIN_KEY_LEN:
            raise ValueError("device_key must be bytes of at least %d bytes" % frame.MIN_KEY_LEN)
        self._key = bytes(device_key)
        self.interval_s = i2c_cfg.interval_s
        self.bus_number = i2c_cfg.bus
        self._clock = clock
        self._bus = bus
        self._state_path = state_path
        self._status_every_n = status_every_n
        self._max_pending = max(2, max_pending)
        self._max_batch = max_batch_records
        self._sampler = LocalSampler(build_readers(i2c_cfg.sensors, bus, clock, sensor_options),
                                     clock, self._counters, quality_rules)
        self._lock = threading.Lock()   # pending, seq, sent: the ack arrives on the agent's thread
        self._pending = []              # [epoch, record], oldest first
        self._sent = {}                 # epoch -> highest seq sent in it
        self._lost = None               # a drop not yet written as a gap record: [n, first, last]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._detail = "not started"
        self._boot(epoch_floor)

    # -- state --------------------------------------------------------------------------------
    def _boot(self, epoch_floor):
        epoch, pending = 0, []
        if self._state_path is not None:
            try:
                with open(self._state_path, encoding="utf-8") as f:
                    st = json.load(f)
                epoch = st["boot_epoch"]
                if not isinstance(epoch, int) or not 0 <= epoch < _U32:
                    raise ValueError("boot_epoch %r" % (epoch,))
                if st.get("device_id") == self.device_id:
                    pending = [[int(e), dict(r)] for e, r in st.get("pending", [])]
                    lost = st.get("lost")
                    if lost is not None:
                        self._lost = [int(lost[0]), tuple(lost[1]), tuple(lost[2])]
            except FileNotFoundError:
                pass
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise ValueError("%s: the local sensors' state is unreadable (%s). It holds device "
                                 "%r's boot epoch and the readings not yet stored: restore it from "
                                 "a backup, or move it away to start afresh (those readings are "
                                 "then lost)" % (self._state_path, e, self.device_id)) from None
        if not isinstance(epoch_floor, int) or not 0 <= epoch_floor < _U32:
            raise ValueError("epoch_floor must be a boot epoch (uint32), got %r" % (epoch_floor,))
        self.boot_epoch = max(epoch, epoch_floor) + 1
        self._next_seq = 0
        for e, rec in pending:
            if e < epoch_floor:  # the gateway already took a newer epoch: these are replays now
                self._lose(e, rec)
        self._pending = [p for p in pending if p[0] >= epoch_floor]
        self._save()  # before any reading exists in the new epoch: raises OSError if it cannot

    def _save(self):
        if self._state_path is None:
            return
        with self._lock:
            doc = {"v": STATE_VERSION, "device_id": self.device_id, "boot_epoch": self.boot_epoch,
                   "pending": list(self._pending), "lost": self._lost}
        tmp = self._state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)
        dfd = os.open(os.path.dirname(os.path.abspath(self._state_path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _save_counted(self):
        try:
            self._save()
        except OSError as e:
            self._counters.inc("state_errors")
            self._detail = ("cannot save %s (%s): readings are kept in memory only; check the "
                            "disk" % (self._state_path, e))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, sink):
        if self._thread is not None:
            raise RuntimeError("%s is already started" % self.name)
        self._sink = sink
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s=5.0):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if not self._thread.is_alive():
                self._thread = None
                self._save_counted()  # what was acked since the last save is not sent again
        self._detail = "stopped"

    def status(self):
        ok = self._bus is not None and not self._sampler.failed
        return {"connected": ok, "detail": self._detail}

    def counters(self):
        c = self._counters.snapshot()
        c["pending"] = len(self._pending)  # gauges: records not yet acked, and the epoch
        c["boot_epoch"] = self.boot_epoch
        return c

    def _run(self):
        clock = self._clock
        due = clock.ticks_ms()
        while not self._stop.is_set():
            left_ms = clock.ticks_diff(due, clock.ticks_ms())
            if left_ms <= 0:
                try:
                    self.sample_once()
                except Exception as e:  # a bug, not a sensor fault: keep sampling, say so
                    self._counters.inc("cycle_errors")
                    self._detail = "a sampling cycle failed (%s: %s): please report it" % (
                        type(e).__name__, e)
                due = clock.ticks_add(due, self.interval_s * 1000)
                if clock.ticks_diff(due, clock.ticks_ms()) < 0:  # sampling overran: no catch-up burst
                    due = clock.ticks_ms()
                continue
            if self._wake.wait(min(left_ms / 1000.0, 1.0)):  # re-checked each second
                self._wake.clear()
                if not self._stop.is_set():  # an ack trimmed the pending records
                    self._save_counted()
                    self.send_pending()

    # -- one cycle ----------------------------------------------------------------------------
    def sample_once(self):
        """Read every sensor, log the reading (and a status record when due), save the state
        and send what is pending. Returns the reading's values."""
        self._counters.inc("cycles")
        values = self._sample()
        t = int(self._clock.wall_s()) if self._clock.wall_trusted() else None
        records = [{"t": t, "values": values}]
        cycle = self._counters.get("cycles")
        if self._status_every_n and cycle % self._status_every_n == 1 % self._status_every_n:
            c = self._counters.snapshot()
            counters = dict((k, c.get(k, 0)) for k in ("cycles", "sensor_failures", "nacks",
                                                        "crc_errors", "timeouts", "dropped", "bad_acks"))
            records.append({"t": t, "kind": "status", "values": [], "counters": counters})
        with self._lock:
            for rec in records:
                self._log(rec, t)
        self._save_counted()
        self.send_pending()
        return values

    def _log(self, rec, t):
        """Give ``rec`` the next seq and append it (lock held), dropping the oldest beyond
        ``max_pending`` and writing the drop as a gap record."""
        while len(self._pending) >= self._max_pending - 1:
            self._lose(*self._pending.pop(0))
        if self._lost is not None:
            n, first, last = self._lost
            self._lost = None
            self._append({"t": t, "kind": "gap", "dropped": n, "first_epoch": first[0],
                          "first_seq": first[1], "last_epoch": last[0], "last_seq": last[1]})
        self._append(rec)

    def _lose(self, epoch, rec):
        """Count a dropped pending record into the gap record still to be written."""
        if rec.get("kind") == "gap":  # an older gap merges into the new one, its own key lost too
            n, first = rec["dropped"] + 1, (rec.get("first_epoch", epoch), rec["first_seq"])
        else:
            n, first = 1, (epoch, rec["seq"])
        self._counters.inc("dropped")  # keys that never arrive: readings, status and merged gaps
        last = (epoch, rec["seq"])
        if self._lost is not None:
            n, first, last = self._lost[0] + n, min(self._lost[1], first), max(self._lost[2], last)
        self._lost = [n, first, last]

    def _append(self, rec):
        if self._next_seq > _U32:  # an epoch's seqs ran out (never in practice): a new epoch
            self.boot_epoch += 1
            self._next_seq = 0
        rec = dict(rec, seq=self._next_seq)
        self._next_seq += 1
        self._pending.append([self.boot_epoch, rec])

    def _sample(self):
        if self._bus is None:
            try:
                from gateway.i2c import SMBus2I2C

                self._bus = SMBus2I2C(self.bus_number)
                self._sampler.set_bus(self._bus)
            except OSError as e:
                self._counters.inc("bus_errors")
                self._detail = ("cannot open /dev/i2c-%d (%s): enable I2C (raspi-config) and put the "
                                "agent's user in the i2c group" % (self.bus_number, e))
                self._counters.inc("sensor_failures", len(self._sampler.readers))
                return [[q, None, quality.SENSOR_FAILED] for r in self._sampler.readers
                        for q in r.reports]
        values = self._sampler.sample()
        failed = self._sampler.failed
        self._detail = ("sensors %s failed this cycle: check their wiring and addresses "
                        "(i2cdetect -y %d)" % (", ".join(failed), self.bus_number) if failed
                        else "read %d sensors on /dev/i2c-%d" % (len(self._sampler.readers), self.bus_number))
        return values

    # -- frames and acks ----------------------------------------------------------------------
    def send_pending(self):
        """Send the oldest pending records (one epoch, up to ``max_batch_records``) as one
        frame. Returns True if the agent took it."""
        with self._lock:
            if not self._pending:
                return False
            epoch = self._pending[0][0]
            batch = [r for e, r in self._pending[:self._max_batch] if e == epoch]
        while True:
            try:
                payload = senml.encode_pack(self.device_id, epoch, batch)
                first, last = batch[0]["seq"], batch[-1]["seq"]
                buf = frame.encode_data(self._key, self.device_id, epoch, first, last - first + 1, payload)
                break
            except ValueError:
                if len(batch) == 1:  # a record no pack can carry (a hand-edited state file)
                    self._trim(epoch, batch[0]["seq"])
                    with self._lock:  # the next cycle writes it as a gap record
                        self._lose(epoch, batch[0])
                    return False
                batch = batch[:len(batch) // 2]
        with self._lock:
            self._sent[epoch] = max(self._sent.get(epoch, -1), last)
        self._counters.inc("frames_sent")
        return self._emit(Arrival(FRAME, buf, self.name, device_id=self.device_id,
                                  received_s=wall_or_none(self._clock), reply=self._on_ack))

    def _on_ack(self, ack):
        """The pipeline's ack (agent's thread): verify it, trim, let the thread send more."""
        try:
            a = frame.decode_frame(ack, {self.device_id: self._key}.get, expect=frame.TYPE_ACK)
            with self._lock:
                through = frame.ack_trims(a, a.boot_epoch, self._sent.get(a.boot_epoch))
        except (frame.FrameError, ValueError, TypeError):
            self._counters.inc("bad_acks")
            return
        n = self._trim(a.boot_epoch, through)
        self._counters.inc("records_acked", n)
        if n:
            self._wake.set()  # the thread saves the state and sends what is left

    def _trim(self, epoch, through):
        with self._lock:
            before = len(self._pending)
            self._pending = [p for p in self._pending if not (p[0] == epoch and p[1]["seq"] <= through)]
            return before - len(self._pending)
