"""Reading the sensors wired to the Pi: one reader per part over the shared drivers, and
``LocalSampler``, which reads them all once a cycle with a node's failure isolation.

The readers mirror the node's (``firmware/app/sensors.py``), set up for a mains-powered Pi:
SCD4x in periodic measurement, TMP117 continuous with 8x averaging, the NO2-B43F through the
ADS1115 (AAN 803, temperature from a named sensor), the I2CXL as a median of pings (and the
fill ratio when the bin's ``empty_cm``/``full_cm`` are given). ``LocalSampler.sample()``
retries a NACK 3 times (10/20/40 ms) and a CRC error once; a sensor that still fails gives
its quantities as ``[q, None, "sensor_failed"]`` — never an invented value — is prepared
again next cycle, and the others keep reporting. Every value gets its quality flag from
``protocol.quality.QualityChecker``. A record holds each quantity once, so when an SCD4x and
a TMP117 both measure temperature, the TMP117's is reported (``assign_reports``, which
``gateway.config`` also runs, so ``gateway check`` refuses a clash). Used
by ``gateway.sources.local_i2c``. The firmware's sampler cannot be imported here (the
``firmware`` tree is not an installed package), hence this small mirror of its policy.
"""

import errno

from drivers.errors import CRCError, DriverError
from protocol import quality

_NACK_ERRNOS = tuple(getattr(errno, n) for n in ("ENODEV", "EREMOTEIO", "ENXIO", "EIO") if hasattr(errno, n))
_NACK_RETRIES = 3
_SCD4X_POLL_MS = 1000   # a periodic sample is due every 5 s (REFERENCE §1.4)
_SCD4X_MAX_POLLS = 7


class _Reader:
    """One configured part: ``prepare()`` (ms until ready) once, ``read(ctx)`` each cycle."""

    quantities = ()
    needs = None  # the name of a temperature sensor this one reads through ``ctx``

    def __init__(self, sensor, bus, clock, opts):
        self.name, self.address, self.part = sensor.name, sensor.address, sensor.part
        self.bus, self.clock, self.opts = bus, clock, dict(opts)
        self.dev = None

    def prepare(self):
        return 0


class _SCD4x(_Reader):
    quantities = ("co2_ppm", "temperature_c", "rh_percent")

    def prepare(self):
        from drivers.scd4x import SCD4X

        self.dev = SCD4X(self.bus, self.clock, self.address)
        # the sensor may still be measuring from before the agent restarted: stop first
        self.clock.sleep_ms(self.dev.stop_periodic_measurement())
        if "temperature_offset_c" in self.opts:
            self.dev.set_temperature_offset(self.opts["temperature_offset_c"])
        if "altitude_m" in self.opts:
            self.dev.set_sensor_altitude(self.opts["altitude_m"])
        return self.dev.start_periodic_measurement()

    def read(self, ctx):
        for _ in range(_SCD4X_MAX_POLLS):
            if self.dev.get_data_ready_status():
                break
            self.clock.sleep_ms(_SCD4X_POLL_MS)
        co2, t, rh = self.dev.read_measurement()
        return [("co2_ppm", co2), ("temperature_c", t), ("rh_percent", rh)]


class _TMP117(_Reader):
    quantities = ("temperature_c",)

    def prepare(self):
        from drivers.tmp117 import TMP117

        self.dev = TMP117(self.bus, self.clock, self.address)
        self.dev.check_device_id()
        self.dev.set_averaging(self.opts.get("averaging", 8))
        if "offset_c" in self.opts:
            self.dev.set_offset_c(self.opts["offset_c"])
        return self.dev.set_mode("continuous")

    def read(self, ctx):
        return [("temperature_c", self.dev.read_temperature_c())]


class _NO2(_Reader):
    """An Alphasense NO2-B43F on its ISB through an ADS1115 (AAN 803 correction)."""

    quantities = ("no2_ppb", "no2_ugm3")

    def __init__(self, sensor, bus, clock, opts):
        _Reader.__init__(self, sensor, bus, clock, opts)
        from drivers.no2b43f import Calibration

        if "calibration" not in self.opts:
            raise ValueError("local sensor %r (ads1115, NO2-B43F): needs its Alphasense "
                             "calibration sheet (sensor_options[%r]['calibration']); without it "
                             "no NO2 value can be computed" % (self.name, self.name))
        self.cal = Calibration.from_sheet(self.opts["calibration"])
        self.needs = self.opts.get("temperature_sensor")
        if not self.needs:
            raise ValueError("local sensor %r (ads1115, NO2-B43F): the AAN 803 correction needs "
                             "the sensor's temperature: wire a TMP117 beside it and configure it"
                             % self.name)

    def prepare(self):
        from drivers.ads1115 import ADS1115

        self.dev = ADS1115(self.bus, self.clock, self.address)
        return 0

    def read(self, ctx):
        from drivers.no2b43f import no2_ppb, ppb_to_ugm3

        t = ctx.get(self.needs)
        if t is None:
            raise DriverError("no temperature from %r for the NO2 correction" % self.needs)
        o = self.opts
        fsr, dr = o.get("fsr_v", 0.512), o.get("data_rate_sps", 8)
        we_mv = self.dev.read_single_shot_v(o.get("we_mux", "AIN0"), fsr, dr) * 1000.0
        ae_mv = self.dev.read_single_shot_v(o.get("ae_mux", "AIN1"), fsr, dr) * 1000.0
        ppb = no2_ppb(o.get("algorithm", 1), we_mv, ae_mv, t, self.cal)
        return [("no2_ppb", ppb), ("no2_ugm3", ppb_to_ugm3(ppb))]


class _Sonar(_Reader):
    """A MaxBotix I2CXL: median distance; the fill ratio too when the bin's depths are given."""

    quantities = ("distance_cm",)  # and "fill_ratio" with the depths (part_quantities)

    def __init__(self, sensor, bus, clock, opts):
        _Reader.__init__(self, sensor, bus, clock, opts)
        self.needs = self.opts.get("air_temperature_sensor")
        self.quantities = part_quantities("i2cxl", self.opts)
        self.fill = "fill_ratio" in self.quantities

    def prepare(self):
        from drivers.i2cxl import I2CXL

        self.dev = I2CXL(self.bus, self.clock, self.address)
        return 0

    def read(self, ctx):
        from drivers.binfill import fill_ratio

        air_c = ctx.get(self.needs) if self.needs else None
        d = self.dev.measure_distance_cm(repeats=self.opts.get("repeats", 5), air_temperature_c=air_c)
        if not self.fill:
            return [("distance_cm", d)]
        fill = fill_ratio(d, self.opts["empty_cm"], self.opts["full_cm"])
        return [("distance_cm", d), ("fill_ratio", fill)]


PARTS = {"scd4x": _SCD4x, "tmp117": _TMP117, "ads1115": _NO2, "i2cxl": _Sonar}
TEMPERATURE_PARTS = ("tmp117", "scd4x")  # parts whose temperature can serve another reader


def part_quantities(part, opts=None):
    """The quantities a ``part`` measures with settings ``opts`` (an i2cxl gives the fill
    ratio only with the bin's ``empty_cm`` and ``full_cm``). Raises ``ValueError`` for an
    unknown part."""
    if part not in PARTS:
        raise ValueError("part %r is not one of %s" % (part, ", ".join(PARTS)))
    opts = opts or {}
    if part == "i2cxl":
        return ("distance_cm", "fill_ratio") if "empty_cm" in opts and "full_cm" in opts else ("distance_cm",)
    return PARTS[part].quantities


def default_temperature_sensor(sensors):
    """The sensor that corrects the NO2 reading when none is named: the first TMP117
    (±0.1 °C), else the first SCD4x, else None. ``sensors``: objects with ``name``, ``part``."""
    for part in TEMPERATURE_PARTS:
        for s in sensors:
            if s.part == part:
                return s.name
    return None


class QuantityClash(ValueError):
    """Two sensors report the same quantity: ``index`` is the second one's position."""

    def __init__(self, message, index):
        ValueError.__init__(self, message)
        self.index = index


def assign_reports(entries):
    """Which sensor reports each quantity. ``entries``: ``[(name, part, quantities)]`` in
    configuration order; returns ``[reported quantities]`` per entry. A record holds each
    quantity once (SenML names are unique in a record): a TMP117's temperature (±0.1 °C) is
    reported rather than an SCD4x's (±0.8 °C, REFERENCE §1.4, §2.1), which still serves the
    NO2 correction or the sonar. Any other overlap (two TMP117s, two sonars) cannot be told
    apart in one device's records: ``QuantityClash`` (a ``ValueError``) naming both."""
    owner, reports = {}, [list(q) for _, _, q in entries]
    for i, (name, part, quantities) in enumerate(entries):
        for q in quantities:
            prev = owner.get(q)
            if prev is None:
                owner[q] = i
            elif {entries[prev][1], part} == {"tmp117", "scd4x"}:
                scd = prev if entries[prev][1] == "scd4x" else i
                reports[scd].remove(q)
                owner[q] = prev if prev != scd else i
            else:
                raise QuantityClash("local sensors %r and %r both report %s, and one device's "
                                    "records hold each quantity once: give one of them its own "
                                    "node" % (entries[prev][0], name, q), i)
    return reports


def build_readers(sensors, bus, clock, options=None):
    """Readers for ``sensors`` (``gateway.config_types.LocalSensor``s), temperature sources
    first. ``options``: {sensor name: dict of part settings}; an ads1115 without a
    ``temperature_sensor`` uses ``default_temperature_sensor``. Raises ``ValueError`` naming
    the sensor for an unknown part, a missing setting or two sensors of one quantity."""
    options = dict(options or {})
    temp = default_temperature_sensor(sensors)
    readers = []
    for s in sensors:
        if s.part not in PARTS:
            raise ValueError("local sensor %r: part %r is not one of %s" % (s.name, s.part, ", ".join(PARTS)))
        opts = dict(options.get(s.name, {}))
        if s.part == "ads1115" and "temperature_sensor" not in opts and temp:
            opts["temperature_sensor"] = temp
        readers.append(PARTS[s.part](s, bus, clock, opts))
    for r, reports in zip(readers, assign_reports([(r.name, r.part, r.quantities) for r in readers])):
        r.reports = reports
    # the NO2 correction and the sonar read their temperature through ctx: those go last
    return [r for r in readers if r.needs is None] + [r for r in readers if r.needs is not None]


class LocalSampler:
    """Reads ``readers`` once per ``sample()`` (module docstring). ``counters`` is a
    ``gateway.sources.Counters`` (``nacks``, ``crc_errors``, ``timeouts``,
    ``sensor_failures``); ``rules``: quality rules (None: the defaults)."""

    def __init__(self, readers, clock, counters, rules=None):
        self.readers = readers
        self.clock = clock
        self.counters = counters
        self.checker = quality.QualityChecker(rules)
        self.prepared = {}
        self.failed = []  # names of the sensors that failed in the last cycle

    def set_bus(self, bus):
        for r in self.readers:
            r.bus = bus
            self.prepared[r.name] = False

    def sample(self):
        """One cycle's values ``[[quantity, value or None, flag], ...]``; never raises for a
        sensor's failure."""
        wait = 0
        for r in self.readers:
            if not self.prepared.get(r.name):
                try:
                    wait = max(wait, self._attempt(r.prepare))
                    self.prepared[r.name] = True
                except (OSError, DriverError, ValueError):
                    self.prepared[r.name] = False
        if wait:
            self.clock.sleep_ms(wait)
        ctx, values, self.failed = {}, [], []
        for r in self.readers:
            got = None
            if self.prepared.get(r.name):
                try:
                    got = self._attempt(r.read, ctx)
                except (OSError, DriverError, ValueError):
                    got = None
            if got is None:
                self.failed.append(r.name)
                self.counters.inc("sensor_failures")
                self.prepared[r.name] = False  # prepare again next cycle: the part may have reset
                values += [[q, None, quality.SENSOR_FAILED] for q in r.reports]
                continue
            for q, v in got:
                flag = self.checker.check(q, v, r.name + "." + q)
                if q == "temperature_c":
                    ctx[r.name] = v if flag == quality.OK else None
                if q in r.reports:
                    values.append([q, v, flag])
        return values

    def _attempt(self, fn, *args):
        """``fn(*args)`` with the node's bounded retries; raises the last error."""
        crc_retried = False
        for attempt in range(_NACK_RETRIES + 1):
            try:
                return fn(*args)
            except CRCError:
                self.counters.inc("crc_errors")
                if crc_retried:
                    raise
                crc_retried = True
            except OSError as e:
                if e.errno == errno.ETIMEDOUT:  # a stuck bus: the kernel's driver recovers it
                    self.counters.inc("timeouts")
                    raise
                if e.errno in _NACK_ERRNOS:
                    self.counters.inc("nacks")
                if e.errno not in _NACK_ERRNOS or attempt == _NACK_RETRIES:
                    raise
                self.clock.sleep_ms(10 << attempt)
        raise OSError(errno.EIO, "retries exhausted")
