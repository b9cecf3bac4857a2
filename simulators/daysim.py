"""A simulated day per deployment profile: the real drivers on the simulated bus, reading
simulated sensors that measure an environment model, compared with the model's truth.

This is the foundation's end-to-end check (and ``scripts/demo`` until the whole-chain
simulator replaces it). Each profile is one node: its own ``VirtualClock``, ``SimI2CBus``,
devices and environment, sampled at the profile's interval the way the firmware will:

| profile | parts (address) | interval | how it reads |
|---|---|---|---|
| classroom-co2 | SCD41 (0x62) | 120 s | periodic measurement; wait for data-ready, read |
| legionella-outlet | TMP117 (0x48) | 900 s | one-shot with 8x averaging |
| bin-level | I2CXL (0x70), TMP117 (0x48) air | 1800 s | median of 5 ranges, speed-of-sound corrected |
| street-no2 | ADS1115 (0x48) + NO2-B43F ISB, TMP117 (0x49) | 60 s | WE/AE single-shot at ±0.512 V 8 SPS, AAN 803 algorithm 1 |

The bin node carries a TMP117 for air temperature: without it the speed-of-sound error is
about 0.18 %/°C of the distance (REFERENCE.md §4).

Accuracy bands (what "within the datasheet" means here) are in ``ACCURACY``.
"""

from drivers import ads1115 as ads
from drivers import binfill
from drivers import no2b43f as no2
from drivers.i2cxl import I2CXL
from drivers.scd4x import SCD4X
from drivers.tmp117 import TMP117
from simulators.ads1115 import SimADS1115
from simulators.clock import VirtualClock
from simulators.environment import ClassroomCO2, PipeOutlet, StreetBin, StreetNO2
from simulators.i2c import SimI2CBus
from simulators.i2cxl import SimMaxSonar
from simulators.no2b43f import DEFAULT_NOISE_PPB
from simulators.scd4x import SimSCD4X
from simulators.tmp117 import SimTMP117

DAY_S = 86400
_NO2_BAND_PPB = 4 * DEFAULT_NOISE_PPB * (1 + 1.3 ** 2) ** 0.5 + 1.0


def _scd41_co2_band(truth_ppm):
    # SCD41 datasheet v1.3 (REFERENCE.md §1.4): ±(50 ppm + 2.5 %) for 400–1000 ppm; above
    # that the wider v1.1 figure ±(40 ppm + 5 %) is the one REFERENCE gives.
    if truth_ppm <= 1000:
        return 50.0 + 0.025 * truth_ppm
    return max(40.0 + 0.05 * truth_ppm, 75.0)


def _tmp117_band(truth_c):
    # TMP117 (REFERENCE.md §2.1): ±0.1 °C −20…50, ±0.15 −40…70, ±0.2 −40…100, ±0.25 −55…125.
    if -20.0 <= truth_c <= 50.0:
        return 0.1
    if -40.0 <= truth_c <= 70.0:
        return 0.15
    if truth_c <= 100.0:
        return 0.2
    return 0.25


# quantity -> function(truth) -> allowed |reading - truth|, with where the figure comes from.
ACCURACY = {
    ("classroom-co2", "co2_ppm"): (_scd41_co2_band, "SCD41 datasheet"),
    ("classroom-co2", "temperature_c"): (lambda t: 0.8, "SCD4x ±0.8 °C (15–35 °C)"),
    ("classroom-co2", "rh_percent"): (lambda t: 6.0, "SCD4x ±6 %RH"),
    ("legionella-outlet", "temperature_c"): (_tmp117_band, "TMP117 datasheet"),
    # I2CXL: 1 cm resolution; the part's echo timing plus our speed-of-sound correction from a
    # ±0.1 °C air temperature leave well under 1 % of range: band 1 cm + 1 %.
    ("bin-level", "distance_cm"): (lambda d: 1.0 + 0.01 * d, "I2CXL 1 cm + 1 %"),
    ("bin-level", "fill_ratio"): (lambda f: 0.03, "from the distance band over a 70 cm bin"),
    # The simulated chain's stated accuracy (not an Alphasense figure; REFERENCE.md has none):
    # AAN 803 algorithm 1 with the sensor's own sheet leaves the electrode noise, on WE and on
    # AE times nT (<= 1.3), so sigma = noise * sqrt(1 + 1.3^2); 4 sigma plus 1 ppb of ADC error.
    ("street-no2", "no2_ppb"): (lambda p: _NO2_BAND_PPB, "simulated chain: 4 sigma + ADC"),
    ("street-no2", "temperature_c"): (_tmp117_band, "TMP117 datasheet"),
}


class Sample:
    __slots__ = ("t_s", "quantity", "reading", "truth")

    def __init__(self, t_s, quantity, reading, truth):
        self.t_s = t_s
        self.quantity = quantity
        self.reading = reading
        self.truth = truth


class _Node:
    """One simulated node: clock, bus, environment, the drivers, and a ``read()``."""

    def __init__(self, seed, start_wall_s=None):
        self.clock = VirtualClock() if start_wall_s is None else VirtualClock(start_wall_s)
        self.bus = SimI2CBus(self.clock)
        self.seed = seed

    def truth(self):
        return self.env.at(self.clock.wall_s())


class ClassroomNode(_Node):
    profile = "classroom-co2"
    interval_s = 120

    def __init__(self, seed, ventilation="poor", start_wall_s=None):
        super().__init__(seed, start_wall_s)
        self.env = ClassroomCO2(seed=seed, ventilation=ventilation)
        self.bus.attach(SimSCD4X(truth=self.env.at, seed=seed))
        self.clock.sleep_ms(1000)  # SCD4x power-up
        self.scd = SCD4X(self.bus, self.clock)
        self.clock.sleep_ms(self.scd.start_periodic_measurement())

    def read(self):
        for _ in range(3):  # a sample is due every 5 s; never more than a few polls
            if self.scd.get_data_ready_status():
                break
            self.clock.sleep_ms(1000)
        co2, t, rh = self.scd.read_measurement()
        truth = self.truth()
        return [("co2_ppm", co2, truth["co2_ppm"]), ("temperature_c", t, truth["temperature_c"]),
                ("rh_percent", rh, truth["rh_percent"])]


class PipeNode(_Node):
    profile = "legionella-outlet"
    interval_s = 900

    def __init__(self, seed, kind="hot", start_wall_s=None):
        super().__init__(seed, start_wall_s)
        self.env = PipeOutlet(seed=seed, kind=kind)
        self.bus.attach(SimTMP117(0x48, truth=self.env.at, seed=seed))
        self.clock.sleep_ms(2)
        self.tmp = TMP117(self.bus, self.clock, 0x48)
        self.tmp.check_device_id()
        self.tmp.set_averaging(8)
        self.clock.sleep_ms(self.tmp.set_mode("shutdown"))

    def read(self):
        self.clock.sleep_ms(self.tmp.start_one_shot())
        t = self.tmp.read_temperature_c()
        return [("temperature_c", t, self.truth()["temperature_c"])]


class BinNode(_Node):
    profile = "bin-level"
    interval_s = 1800

    def __init__(self, seed, start_wall_s=None):
        super().__init__(seed, start_wall_s)
        self.env = StreetBin(seed=seed)
        self.min_cm = self.bus.attach(SimMaxSonar(0x70, truth=self.env.at, seed=seed)).min_cm
        self.bus.attach(SimTMP117(0x48, truth=self.env.at, seed=seed + 1))
        self.clock.sleep_ms(2)
        self.sonar = I2CXL(self.bus, self.clock)
        self.tmp = TMP117(self.bus, self.clock, 0x48)
        self.clock.sleep_ms(self.tmp.set_mode("shutdown"))

    def read(self):
        self.clock.sleep_ms(self.tmp.start_one_shot())
        air_c = self.tmp.read_temperature_c()
        truth = self.truth()
        d = self.sonar.measure_distance_cm(repeats=5, air_temperature_c=air_c)
        truth_after = self.truth()  # the ranges take ~0.5 s: compare with the truth then
        if truth_after["lid_open"] or truth["lid_open"]:
            return []  # a lid event: the firmware debounces these; not a sensor-accuracy sample
        fill = binfill.fill_ratio(d, self.env.empty_distance_cm, self.env.full_distance_cm)
        # A surface nearer than the part's minimum range reads as the minimum (REFERENCE §4).
        seen_cm = max(truth_after["distance_cm"], self.min_cm)
        seen_fill = binfill.fill_ratio(seen_cm, self.env.empty_distance_cm, self.env.full_distance_cm)
        return [("distance_cm", d, seen_cm), ("fill_ratio", fill, seen_fill)]


class StreetNode(_Node):
    profile = "street-no2"
    interval_s = 60
    algorithm = 1

    def __init__(self, seed, site="busy", start_wall_s=None):
        super().__init__(seed, start_wall_s)
        self.env = StreetNO2(seed=seed, site=site)
        adc = self.bus.attach(SimADS1115(0x48, inputs={"electrode": {"zero_algorithm": self.algorithm},
                                                       "we": 0, "ae": 1},
                                         truth=self.env.at, seed=seed))
        self.bus.attach(SimTMP117(0x49, truth=self.env.at, seed=seed + 1))
        self.clock.sleep_ms(2)
        self.cal = no2.Calibration.from_sheet(adc.electrode_sheet)
        self.adc = ads.ADS1115(self.bus, self.clock, 0x48)
        self.tmp = TMP117(self.bus, self.clock, 0x49)
        self.clock.sleep_ms(self.tmp.set_mode("shutdown"))

    def read(self):
        self.clock.sleep_ms(self.tmp.start_one_shot())
        t = self.tmp.read_temperature_c()
        we_mv = self.adc.read_single_shot_v("AIN0", 0.512, 8) * 1000.0
        ae_mv = self.adc.read_single_shot_v("AIN1", 0.512, 8) * 1000.0
        ppb = no2.no2_ppb(self.algorithm, we_mv, ae_mv, t, self.cal)
        truth = self.truth()
        return [("no2_ppb", ppb, truth["no2_ppb"]), ("temperature_c", t, truth["temperature_c"])]


NODES = {n.profile: n for n in (ClassroomNode, PipeNode, BinNode, StreetNode)}
PROFILES = tuple(NODES)


def run_day(profile, seed=1, duration_s=DAY_S, progress=None, **node_kwargs):
    """Run ``profile`` for ``duration_s`` simulated seconds; returns a list of ``Sample``.

    ``progress(fraction)`` is called now and then (for a progress bar)."""
    if profile not in NODES:
        raise ValueError("profile must be one of %s, got %r" % (", ".join(PROFILES), profile))
    node = NODES[profile](seed, **node_kwargs)
    samples = []
    start = node.clock.monotonic_s()
    n = int(duration_s // node.interval_s)
    for i in range(n):
        node.clock.advance_to_s(start + i * node.interval_s)
        t = node.clock.monotonic_s() - start
        for quantity, reading, truth in node.read():
            samples.append(Sample(t, quantity, reading, truth))
        if progress is not None and i % 50 == 0:
            progress(i / n)
    if progress is not None:
        progress(1.0)
    return samples


class Summary:
    """Per quantity: count, mean truth, mean and max |error|, and how many lie in the band."""

    def __init__(self, profile, quantity, samples):
        band, self.source = ACCURACY[(profile, quantity)]
        errors = [abs(s.reading - s.truth) for s in samples]
        self.profile = profile
        self.quantity = quantity
        self.count = len(samples)
        self.truth_min = min(s.truth for s in samples)
        self.truth_max = max(s.truth for s in samples)
        self.mean_abs_error = sum(errors) / len(errors)
        self.max_abs_error = max(errors)
        self.within = sum(1 for s, e in zip(samples, errors) if e <= band(s.truth))
        self.band_at_max = band(max(samples, key=lambda s: s.truth).truth)


def summarise(profile, samples):
    by_q = {}
    for s in samples:
        by_q.setdefault(s.quantity, []).append(s)
    return [Summary(profile, q, ss) for q, ss in by_q.items()]


def format_table(summaries):
    head = ("profile", "quantity", "n", "truth range", "mean |err|", "max |err|", "in spec", "spec from")
    rows = [head]
    for s in summaries:
        rows.append((s.profile, s.quantity, str(s.count), "%.4g .. %.4g" % (s.truth_min, s.truth_max),
                     "%.3g" % s.mean_abs_error, "%.3g" % s.max_abs_error,
                     "%d/%d" % (s.within, s.count), s.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
