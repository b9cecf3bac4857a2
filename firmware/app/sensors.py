"""Sampling: each configured sensor's driver, read once a wake cycle, failures isolated.

Theory of operation
-------------------
``build_sensors(cfg_sensors, buses, clock)`` makes one ``Sensor`` per entry of the validated
configuration (``app.config``), each holding its own driver; each part's ``Sensor`` class is
in its own module (``part_class``), loaded only when configured. A cycle is ``Sampler.sample()``:

1. ``start()`` every sensor that measures on request (SCD41 single shot, TMP117 one-shot);
   each returns the ms until its result is ready, and the sampler waits the longest once.
2. ``read()`` them in dependency order: the temperature sensors that others need (the NO2
   correction, the sonar's speed of sound) come first, their values shared through
   ``ctx``.
3. A read that fails is retried, bounded (RELIABILITY.md): a NACK up to 3 times with
   10/20/40 ms backoff, a CRC error once; a stuck bus (``ETIMEDOUT``) gets one bus recovery
   (``recover_bus(bus_id)``, injected by the composition root: nine SCL clocks and a STOP,
   then the peripheral re-initialised) and one retry; the watchdog is the last resort. A
   sensor that still fails yields its quantities as ``[q, None, "sensor_failed"]`` — no value
   is ever invented — and the next sensor is read regardless.
   A bus still stuck after the nine clocks, on a node whose sensors sit on a switched rail,
   gets the next step of RELIABILITY.md's escalation: ``power_cycle()`` (injected too:
   ``app.hw.Rail.cycle``), at most once per ``sample()`` (the boot's ``prepare()`` counts
   with the first). Every part on the rail has then
   lost its state (modes, a started conversion), so each is brought up again before its next
   step (prepare, and start for a part that measures on request) and the failed step is tried
   once more; ``rail_cycles`` counts them. A part still failing after that is
   ``sensor_failed`` as above; the watchdog stays the last resort.
4. Every value gets its quality flag from ``protocol.quality.QualityChecker`` with the
   profile's rules; ``checker_state()`` / the ``checker_state`` argument carry the checker's
   memory across deep sleep (the composition root keeps it in RTC memory).

Counters (``nacks``, ``crc_errors``, ``timeouts``, ``bus_recoveries``, ``sensor_failures``; ``rail_cycles``
with a ``power_cycle``; ``nap_ms`` when the clock naps, ``app.clock.NappingClock``) are plain ints the
composition root reports in status records. Runs on MicroPython (and CPython for tests).
"""

import errno

from drivers.errors import CRCError, DriverError
from protocol import quality

_NACK_ERRNOS = tuple(getattr(errno, n) for n in ("ENODEV", "EREMOTEIO", "ENXIO", "EIO") if hasattr(errno, n))
_NACK_RETRIES = 3


class Sensor:
    """One configured part. ``spec`` is its validated config entry."""

    quantities = ()
    needs = None  # the name of a temperature sensor this one reads through ``ctx``
    power_up_ms = 0  # after its supply comes up, the part NACKs for this long

    def __init__(self, spec, bus, clock):
        self.spec = spec
        self.name = spec["name"]
        self.bus = bus
        self.clock = clock
        self.failures = 0  # consecutive failed cycles
        # each quantity's stream name for the quality checker ("pipe.temperature_c"), made
        # once: on MicroPython every string a concatenation makes is first looked up among the
        # interned strings, one by one (~7,000 instructions each, two a value every cycle)
        self.keys = dict((q, self.name + "." + q) for q in self.quantities)

    def prepare(self):
        """Once per boot: settings and modes. Returns ms until the part is ready."""
        return 0

    def start(self):
        """Begin a measurement; ms until its result is ready (0: read measures itself)."""
        return 0

    def read(self, ctx):
        """The values ``[(quantity, value), ...]``; raises OSError / DriverError."""
        raise NotImplementedError


def release_drivers(*names):
    """Forget the driver modules ``drivers.<name>`` (``drivers.release``), so a part whose
    driver is loaded for a read does not hold it while the node logs and sends."""
    from drivers import release

    for name in names:
        release("drivers." + name)


def part_class(part):
    """The ``Sensor`` class for a configured ``part``. Each lives in its own module
    (``part_scd4x``, ``part_tmp117``, ``part_no2``, ``part_sonar``), imported here on first
    use: a node loads the code of the parts it has, not all four. Raises ``ValueError``."""
    if part == "scd4x":
        from .part_scd4x import SCD4xSensor as cls
    elif part == "tmp117":
        from .part_tmp117 import TMP117Sensor as cls
    elif part == "ads1115":
        from .part_no2 import NO2Sensor as cls
    elif part == "i2cxl":
        from .part_sonar import SonarSensor as cls
    else:
        raise ValueError("part %r has no sensor class (scd4x, tmp117, ads1115, i2cxl)" % (part,))
    return cls


def build_sensors(cfg_sensors, buses, clock):
    """Sensors for the validated ``cfg_sensors``; ``buses`` maps bus id → I2C bus object.
    Ordered so every temperature source is read before the sensors that need it."""
    made = [part_class(s["part"])(s, buses[s["bus"]], clock) for s in cfg_sensors]
    first = [s for s in made if s.needs is None]
    return first + [s for s in made if s.needs is not None]


class Sampler:
    """Reads every sensor once per ``sample()``; see the module docstring."""

    def __init__(self, sensors, clock, rules, checker_state=None, counters=None, recover_bus=None,
                 power_cycle=None):
        self.sensors = sensors
        self.clock = clock
        self.recover_bus = recover_bus
        self.power_cycle = power_cycle
        self.checker = quality.QualityChecker(rules)
        if checker_state:
            self.checker.restore(checker_state)
        self.counters = {"nacks": 0, "crc_errors": 0, "timeouts": 0, "bus_recoveries": 0, "sensor_failures": 0}
        if power_cycle is not None:
            self.counters["rail_cycles"] = 0
        naps = getattr(clock, "napped_ms", None) is not None
        if naps:
            self.counters["nap_ms"] = 0
        for k in counters or ():
            if k in self.counters and isinstance(counters[k], int):
                self.counters[k] = counters[k]  # carried across deep sleep
        if naps:  # the clock counts on from what the earlier wakes napped
            clock.napped_ms += self.counters["nap_ms"]
        self.prepared = {}
        self._rail_epoch = 0  # rail power-cycles so far this boot
        self._cycled = False  # one power-cycle per sample()

    def checker_state(self):
        return self.checker.snapshot()

    def _attempt(self, fn, *args, bus=None):
        """``fn(*args)`` with the bounded retries of RELIABILITY.md; raises the last error."""
        crc_retried = False
        recovered = False
        for attempt in range(_NACK_RETRIES + 1):
            try:
                return fn(*args)
            except CRCError:
                self.counters["crc_errors"] += 1
                if crc_retried:
                    raise
                crc_retried = True
            except OSError as e:
                if e.errno == errno.ETIMEDOUT:
                    self.counters["timeouts"] += 1
                    if recovered or self.recover_bus is None or bus is None:
                        raise
                    recovered = True
                    self.counters["bus_recoveries"] += 1
                    self.recover_bus(bus)
                    continue
                if e.errno not in _NACK_ERRNOS or attempt == _NACK_RETRIES:
                    if e.errno in _NACK_ERRNOS:
                        self.counters["nacks"] += 1
                    raise
                self.counters["nacks"] += 1
                self.clock.sleep_ms(10 << attempt)
        raise OSError(errno.EIO, "retries exhausted")

    def prepare(self, since_power_on_ms=None):
        """Prepare every sensor (at boot); a sensor that fails is retried next cycle.

        ``since_power_on_ms``: after a power-on reset, how long the parts have had power
        (the board's ticks); the sampler first waits out the slowest part's power-up time.
        None (a wake from deep sleep, a watchdog reset) when the parts stayed powered."""
        if since_power_on_ms is not None:
            left = max([s.power_up_ms for s in self.sensors] + [0]) - since_power_on_ms
            if left > 0:
                self.clock.sleep_ms(left)
        wait = 0
        for s in self.sensors:
            wait = max(wait, self._prepare_one(s))
        if wait:
            self.clock.sleep_ms(wait)

    def _prepare_one(self, s):
        try:
            ms = self._step(s, "prepare")
            self.prepared[s.name] = self._rail_epoch
            return ms
        except (OSError, DriverError, ValueError):
            self.prepared[s.name] = None
            return 0

    def _step(self, s, step, *args):
        """Sensor ``s``'s ``step`` ("prepare", "start" or "read") with ``args``, with the
        retries of ``_attempt``; a bus still stuck after them gets the rail's power-cycle (once
        per sample), ``s`` is brought up again (prepare, and for a read its start) and the
        step is tried once more."""
        bus = s.spec["bus"]
        try:
            return self._attempt(getattr(s, step), *args, bus=bus)
        except OSError as e:
            if e.errno != errno.ETIMEDOUT or self.power_cycle is None or self._cycled:
                raise
        self._cycled = True
        self.counters["rail_cycles"] += 1
        self.power_cycle()
        self._rail_epoch += 1  # every part on the rail lost its state
        if step != "prepare":
            self.clock.sleep_ms(self._attempt(s.prepare, bus=bus))
            self.prepared[s.name] = self._rail_epoch
            if step == "read":
                self.clock.sleep_ms(self._attempt(s.start, bus=bus))
        return self._attempt(getattr(s, step), *args, bus=bus)

    def _current(self, s):
        """True if ``s`` was prepared since the rail last lost power."""
        return self.prepared.get(s.name) == self._rail_epoch

    def sample(self):
        """One reading's values: ``[[quantity, value_or_None, flag], ...]`` for all sensors."""
        wait = 0
        started = {}  # sensor name -> the rail epoch it was started in
        for s in self.sensors:
            if not self._current(s):
                self._prepare_one(s)
            if self._current(s):
                try:
                    wait = max(wait, self._step(s, "start"))
                    started[s.name] = self._rail_epoch
                except (OSError, DriverError):
                    pass
        if wait:
            self.clock.sleep_ms(wait)
        ctx = {}
        values = []
        for s in self.sensors:
            got = None
            if s.name in started:
                try:
                    if started[s.name] != self._rail_epoch:  # the rail was cycled since its start
                        self.clock.sleep_ms(self._step(s, "prepare"))
                        self.prepared[s.name] = self._rail_epoch
                        self.clock.sleep_ms(self._step(s, "start"))
                    got = self._step(s, "read", ctx)
                except (OSError, DriverError, ValueError):
                    got = None
            if got is None:
                s.failures += 1
                self.counters["sensor_failures"] += 1
                self.prepared[s.name] = None  # prepare again next cycle (the part may have reset)
                for q in s.quantities:
                    values.append([q, None, quality.SENSOR_FAILED])
                continue
            s.failures = 0
            for q, v in got:
                flag = self.checker.check(q, v, s.keys[q])
                if q == "temperature_c":
                    ctx[s.name] = v if flag == quality.OK else None
                values.append([q, v, flag])
        if "nap_ms" in self.counters:
            self.counters["nap_ms"] = self.clock.napped_ms
        self._cycled = False  # the next sample may power-cycle again (the boot's prepare shares this one's)
        return values
