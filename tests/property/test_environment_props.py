"""Environment models: values depend only on (seed, parameters, time), never on the order or
spacing of queries, and stay physically bounded at any date."""

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.clock import DEFAULT_START_WALL_S
from simulators.environment import ClassroomCO2, PipeOutlet, StreetBin, StreetNO2
from simulators.environment.base import DAY_S

FACTORIES = {
    "classroom": lambda seed: ClassroomCO2(seed=seed, ventilation="poor"),
    "pipe": lambda seed: PipeOutlet(seed=seed, kind="hot"),
    "cold": lambda seed: PipeOutlet(seed=seed, kind="cold", fault="little_used"),
    "street": lambda seed: StreetNO2(seed=seed, site="busy"),
    "bin": lambda seed: StreetBin(seed=seed, fly_tips_per_week=2.0),
}
BASES = st.sampled_from([DEFAULT_START_WALL_S, 946684800, 1783504800, 1950000000.5])  # 2026, 2000, 2026-07, 2031
OFFSETS = st.lists(st.floats(min_value=0.0, max_value=3.0 * DAY_S, allow_nan=False), min_size=1, max_size=6)
SEEDS = st.integers(min_value=0, max_value=2**40)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(FACTORIES)), seed=SEEDS, base=BASES, offsets=OFFSETS)
def test_values_do_not_depend_on_query_order(name, seed, base, offsets):
    times = sorted(base + o for o in offsets)
    forward = FACTORIES[name](seed)
    seen = {t: forward.at(t) for t in times}
    backward = FACTORIES[name](seed)
    for t in reversed(times):
        assert backward.at(t) == seen[t]


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(FACTORIES)), seed=SEEDS, base=BASES, offsets=OFFSETS)
def test_values_are_physically_bounded(name, seed, base, offsets):
    model = FACTORIES[name](seed)
    for t in sorted(base + o for o in offsets):
        r = model.at(t)
        assert -25.0 < r["temperature_c"] < 70.0
        if name == "classroom":
            assert r["co2_ppm"] >= r["outdoor_co2_ppm"] - 1e-9 and r["co2_ppm"] < 10000.0
            assert 0.0 <= r["rh_percent"] <= 100.0 and r["occupants"] >= 0
        elif name in ("pipe", "cold"):
            assert 0.0 < r["water_c"] < 70.0 and isinstance(r["flowing"], bool)
        elif name == "street":
            assert 0.0 < r["no2_ppb"] < 400.0 and 0.0 <= r["rh_percent"] <= 100.0
            assert 0.3 <= r["wind_ms"] <= 25.0 and r["traffic_veh_h"] >= 0.0
        else:
            assert 0.0 <= r["fill_ratio"] <= 1.0 and r["overflow_l"] >= 0.0
            assert 5.0 <= r["distance_cm"] <= model.empty_distance_cm
            if r["lid_open"]:
                assert 15.0 <= r["distance_cm"] <= 40.0
