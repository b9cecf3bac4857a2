"""The wake cycle: sample → flag → log → send what is pending → verify ack → trim.

Theory of operation
-------------------
``Node.cycle()`` is one wake, whatever the power mode (the composition root, ``app/main.py``,
sleeps between cycles — deep sleep on battery, light sleep on mains):

1. ``sampler.sample()`` reads every sensor, values flagged (``app.sensors``); one failing
   sensor is ``sensor_failed`` and never stops the others.
2. The values become a reading record ``{"t", "values"}`` (``t`` None while wall time is not
   trusted). With ``mean_period_s`` the node logs instead, once a period, the mean of each
   quantity's ``ok`` values (street NO2 reports 15-min means); a quantity with none is
   ``sensor_failed`` in the mean.
3. Every ``status_every_n_cycles`` a status record follows: battery volts, boot reason and
   the counters (sensor, log, link).
4. Records are appended to the flash log (``app.store``) *before* any send: the log assigns
   their seq from the persistent state, so a reading exists once it is on flash.
5. ``link.deliver(log)`` sends the pending records oldest first and trims only what an
   authenticated ack (serial, MQTT) or the network (LoRaWAN) confirmed.

6. The RTC is checked for a step at each cycle's start (``app.clock.StepWatch``: its advance
   against the ticks, or the deep sleep requested, since the last cycle's start). Once it has
   stepped, every record's ``ok`` values are logged ``time_unsynced`` (``t`` kept raw) until a
   power-on (the RTC restarts; nothing in the firmware sets it today): the state counters
   ``clock_steps`` (steps seen) and ``clock_unsynced`` (1 while so) persist it on flash, so a
   watchdog reset does not forget it, and appear in the status record once non-zero.

What must survive a deep sleep (the cycle count, the aggregation, the quality checker's
memory, the sampler's and link's counters, the link's ``wake`` state such as the LoRaWAN
link's batching) is ``Node.persist``, a small JSON-able dict the composition root keeps in
RTC memory. Runs on MicroPython (and CPython for tests).
"""

from protocol import quality

from .clock import StepWatch


class Node:
    def __init__(self, cfg, clock, state, log, sampler, link, persist=None, battery=None, feed=None):
        self.cfg = cfg
        self.clock = clock
        self.state = state
        self.log = log
        self.sampler = sampler
        self.link = link
        self.persist = persist if isinstance(persist, dict) else {}
        self.persist.setdefault("cycle", 0)
        self.battery = battery  # callable → volts, or None
        self.feed = feed or (lambda: None)
        link_counters = getattr(link, "counters", None)
        if isinstance(link_counters, dict):  # carried across deep sleep, like the sampler's
            for k, v in self.persist.get("lc", {}).items():
                if k in link_counters and isinstance(v, int):
                    link_counters[k] = v
        wake = getattr(link, "wake", None)
        if isinstance(wake, dict):  # e.g. how many wakes the LoRaWAN link has held
            for k, v in self.persist.get("lw", {}).items():
                if k in wake and (v is None or isinstance(v, int)):
                    wake[k] = v
        period = cfg.get("mean_period_s") or 0
        self.mean_cycles = max(1, period // cfg["interval_s"]) if period else 0
        # a restart (machine.soft_reset, app/main.py) keeps the chip's ticks running
        self.watch = StepWatch(clock, self.persist, cfg["interval_s"] * 1000, state.boot_reason == "restart")
        if state.boot_reason == "power_on" and state.counter(UNSYNCED):
            _set_unsynced(state, 0)  # the RTC restarted: untrusted until something sets it

    def _check_clock(self):
        """The RTC's time now (int, None if untrusted); notes a step (counted, persisted)."""
        wall, step = self.watch.start()
        if step:
            self.state.incr("clock_steps")
            _set_unsynced(self.state, 1)
        return wall

    def _mark_unsynced(self, records):
        if self.state.counter(UNSYNCED):
            for r in records:
                for v in r.get("values", ()):
                    if v[2] == quality.OK:
                        v[2] = quality.TIME_UNSYNCED

    def _aggregate(self, values, t):
        """Add a cycle's values to the running means; the mean record when a period ends."""
        agg = self.persist.setdefault("agg", {"n": 0, "t": t, "q": {}})
        agg["n"] += 1
        if agg["t"] is None:
            agg["t"] = t
        for q, v, flag in values:
            acc = agg["q"].setdefault(q, [0.0, 0])
            if flag == quality.OK and v is not None:
                acc[0] += v
                acc[1] += 1
        if agg["n"] < self.mean_cycles:
            return None
        means = []
        for q in agg["q"]:
            total, n = agg["q"][q]
            means.append([q, total / n, quality.OK] if n else [q, None, quality.SENSOR_FAILED])
        del self.persist["agg"]
        return {"t": agg["t"], "values": means}

    def status_record(self, t):
        values = []
        if self.battery is not None:
            try:
                values.append(["battery_v", round(self.battery(), 3), quality.OK])
            except (OSError, ValueError):
                values.append(["battery_v", None, quality.SENSOR_FAILED])
        values.append(["boot_reason", self.state.boot_reason or "unknown", quality.OK])
        counters = {"boots": self.state.boot_count, "cycles": self.persist["cycle"]}
        for k in ("clock_steps", UNSYNCED):  # RTC steps, once there are any
            if self.state.counter(k):
                counters[k] = self.state.counter(k)
        for source in (self.sampler.counters, self.log.stats(), getattr(self.link, "counters", {})):
            for k in source:
                if isinstance(source[k], int) and not isinstance(source[k], bool):
                    counters[_counter_name(k)] = source[k]
        return {"t": t, "kind": "status", "values": values, "counters": counters}

    def cycle(self):
        """One wake's work; returns a summary dict (what was logged and delivered)."""
        self.feed()
        t = self._check_clock()
        values = self.sampler.sample()
        self.persist["q"] = self.sampler.checker_state()
        self.persist["cycle"] += 1
        records = []
        if self.mean_cycles:
            mean = self._aggregate(values, t)
            if mean is not None:
                records.append(mean)
        else:
            records.append({"t": t, "values": values})
        every = self.cfg.get("status_every_n_cycles") or 0
        if every and self.persist["cycle"] % every == 1 % every:
            records.append(self.status_record(t))
        if records:
            self._mark_unsynced(records)
            try:
                self.log.append_all(records)
            except ValueError:  # together too big for one segment: one append each
                for r in records:
                    self.log.append(r)
        logged = len(records)
        records = None  # (heap) on flash now: the send reads them back, one batch at a time
        self.feed()
        delivered = self.link.deliver(self.log) if self.link is not None else 0
        self.persist["sc"] = self.sampler.counters
        self.watch.end()
        if isinstance(getattr(self.link, "counters", None), dict):
            self.persist["lc"] = self.link.counters
        if isinstance(getattr(self.link, "wake", None), dict):
            self.persist["lw"] = self.link.wake
        return {"logged": logged, "delivered": delivered, "values": values}


UNSYNCED = "clock_unsynced"


def _set_unsynced(state, value):
    """Set the ``clock_unsynced`` state counter to ``value`` (0 or 1) and persist it now."""
    state.incr(UNSYNCED, value - state.counter(UNSYNCED))
    try:
        state.save()
    except OSError:  # flash full or failing: the flag still holds in memory for this boot
        pass


def _counter_name(k):
    """The status record's name for the counter ``k``: each character but a-z and 0-9 made "_";
    ``k`` itself when it has none. Done on its UTF-8 bytes (a continuation byte belongs to the
    character before it): a str's characters one by one are each a search of the interned
    strings on MicroPython."""
    raw = k.encode()
    out = bytearray()
    for c in raw:
        if 0x61 <= c <= 0x7A or 0x30 <= c <= 0x39:
            out.append(c)
        elif c < 0x80 or c >= 0xC0:  # an ASCII character or the first byte of another
            out.append(0x5F)
    return k if out == raw else out.decode()
