"""Environment models: repeatability whatever the query pattern, and physical sanity."""

import pytest

from drivers.binfill import fill_ratio as driver_fill_ratio
from drivers.no2b43f import ppb_to_ugm3
from simulators.clock import DEFAULT_START_WALL_S, VirtualClock
from simulators.environment import ClassroomCO2, PipeOutlet, StreetBin, StreetNO2, build_environment
from simulators.environment.base import (
    DAY_S,
    HOUR_S,
    WEEK_S,
    intervals_where,
    rise_events,
    weekday,
    window_means,
)
from simulators.i2c import SimI2CDevice

S = DEFAULT_START_WALL_S  # Monday 2026-01-05 00:00
JULY_WED = 1783504800  # Wednesday 2026-07-08 10:00 (a start that is not the default)

FACTORIES = {
    "classroom": lambda seed=0: ClassroomCO2(seed=seed, ventilation="poor"),
    "pipe": lambda seed=0: PipeOutlet(seed=seed, kind="hot"),
    "street": lambda seed=0: StreetNO2(seed=seed, site="busy"),
    "bin": lambda seed=0: StreetBin(seed=seed),
}
SENSOR_KEYS = {
    "classroom": ("co2_ppm", "temperature_c", "rh_percent"),
    "pipe": ("temperature_c", "water_c", "flowing", "ambient_c"),
    "street": ("no2_ppb", "temperature_c", "rh_percent", "wind_ms", "traffic_veh_h"),
    "bin": ("distance_cm", "fill_ratio", "temperature_c", "lid_open"),
}
MODEL_NAMES = sorted(FACTORIES)


# -- repeatability ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_values_whatever_the_query_pattern(name):
    probes = [S + 13 * HOUR_S, S + DAY_S + 9 * HOUR_S + 37.25, S + 2 * DAY_S - 1, S + 2 * DAY_S]
    stepped = FACTORIES[name]()
    seen = {}
    for t in sorted(set(S + 60 * i for i in range(2 * 24 * 60 + 1)) | set(probes)):  # every 60 s
        seen[t] = stepped.at(t)
    for t in probes:
        assert FACTORIES[name]().at(t) == seen[t]  # a fresh model asked once
    backwards = FACTORIES[name]()
    for t in reversed(probes):  # later first, then earlier than the cache
        assert backwards.at(t) == seen[t]
    assert stepped.at(probes[0]) == seen[probes[0]]  # and the stepped one, asked again


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_two_fresh_models_agree_and_other_seeds_differ(name):
    times = [S + 3 * DAY_S + 60 * i for i in range(0, 24 * 60, 7)]
    a, b, c = FACTORIES[name](5), FACTORIES[name](5), FACTORIES[name](6)
    va, vb, vc = [a.at(t) for t in times], [b.at(t) for t in times], [c.at(t) for t in times]
    assert va == vb
    assert va != vc


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_any_start_date_and_keys_with_units(name):
    model = FACTORIES[name](1)
    first = model.at(JULY_WED)
    for i in range(1, 120):
        model.at(JULY_WED + 60 * i)
    assert FACTORIES[name](1).at(JULY_WED) == first
    assert model(JULY_WED) == first  # callable, as a SimI2CDevice truth
    for key in SENSOR_KEYS[name]:
        assert key in first


@pytest.mark.parametrize("name", ["classroom", "pipe", "bin"])
def test_week_seam_is_invisible(name):
    # Each week's run starts from a warm-up; the value either side of Monday 00:00 must join.
    model = FACTORIES[name](2)
    monday = S + WEEK_S
    before, after = model.at(monday - 60), model.at(monday)
    key = {"classroom": "co2_ppm", "pipe": "water_c", "bin": "fill_ratio"}[name]
    tol = {"classroom": 2.0, "pipe": 0.2, "bin": 0.01}[name]
    assert abs(after[key] - before[key]) < tol


def test_model_is_a_device_truth():
    clock = VirtualClock()
    room = ClassroomCO2(seed=3)
    dev = SimI2CDevice(0x62, truth=room)
    dev.attach(clock)
    clock.advance_s(9 * HOUR_S + 30)
    assert dev.truth("co2_ppm") == room.at(clock.wall_s())["co2_ppm"]


def test_build_environment_from_a_json_spec():
    model = build_environment({"model": "bin", "seed": 4, "collection_weekdays": ["mon", "fri"]})
    assert isinstance(model, StreetBin) and model.collection_weekdays == frozenset({0, 4})
    with pytest.raises(ValueError, match="model"):
        build_environment({"model": "volcano"})
    with pytest.raises(ValueError, match="colour"):
        build_environment({"model": "pipe", "colour": "red"})


@pytest.mark.parametrize("factory,arg", [
    (lambda: ClassroomCO2(ventilation="drafty"), "ventilation"),
    (lambda: ClassroomCO2(volume_m3=0), "volume_m3"),
    (lambda: ClassroomCO2(pupils=-1), "pupils"),
    (lambda: ClassroomCO2(holidays=["2026-13-01"]), "holidays"),
    (lambda: ClassroomCO2(timetable=[["09:00", "10:00", "lesson"], ["09:30", "10:30", "break"]]), "timetable"),
    (lambda: PipeOutlet(kind="warm"), "kind"),
    (lambda: PipeOutlet(fault="rusty"), "fault"),
    (lambda: StreetNO2(site="motorway"), "site"),
    (lambda: StreetBin(full_distance_cm=20.0), "full_distance_cm"),
    (lambda: StreetBin(empty_distance_cm=30.0, full_distance_cm=30.0), "empty_distance_cm"),
    (lambda: StreetBin(collection_weekdays=[9]), "collection_weekdays"),
    (lambda: StreetBin(seed="x"), "seed"),
])
def test_bad_parameters_raise_value_error_naming_them(factory, arg):
    with pytest.raises(ValueError, match=arg):
        factory()


# -- classroom --------------------------------------------------------------------------------
def _at_hm(day, hh, mm=0):
    return S + day * DAY_S + hh * HOUR_S + mm * 60


def test_classroom_co2_never_below_outdoor():
    for vent in ("poor", "typical", "good"):
        room = ClassroomCO2(seed=1, ventilation=vent)
        _, co2 = room.sample(S, S + WEEK_S, 150, "co2_ppm")
        assert min(co2) >= room.outdoor_co2_ppm - 1e-9


def test_classroom_rises_in_lessons_falls_at_breaks_and_overnight():
    room = ClassroomCO2(seed=2, ventilation="poor", away_prob=0.0)
    c = lambda hh, mm=0, day=1: room.at(_at_hm(day, hh, mm))["co2_ppm"]  # noqa: E731
    assert c(8, 40) < room.outdoor_co2_ppm + 30  # empty room before school: near outdoor
    assert c(10, 29) > c(9, 0) > c(8, 45) + 300  # lesson: rising
    assert c(10, 45) < c(10, 30) - 200  # morning break: windows open, room empty
    assert c(13, 15) < c(12, 15) - 500  # lunch
    assert c(15, 14) > c(13, 45)  # afternoon lessons: rising again
    assert c(6, 0, day=2) < room.outdoor_co2_ppm + 30  # overnight back to near outdoor
    assert room.at(_at_hm(1, 11))["occupants"] >= 20
    assert room.at(_at_hm(1, 11))["windows_open"] is False


def test_poor_room_exceeds_1500_for_20_min_every_school_day_good_room_never():
    poor = ClassroomCO2(seed=0, ventilation="poor")
    good = ClassroomCO2(seed=0, ventilation="good")
    for day in range(5):
        spans = poor.co2_exceedances(S + day * DAY_S, S + (day + 1) * DAY_S)
        assert spans and max(b - a for a, b in spans) >= 20 * 60
    assert good.co2_exceedances(S, S + WEEK_S, min_duration_s=0) == []
    assert good.seconds_above(S, S + WEEK_S) == 0
    assert poor.mean_co2_ppm(_at_hm(0, 8, 45), _at_hm(0, 15, 15)) > good.mean_co2_ppm(_at_hm(0, 8, 45), _at_hm(0, 15, 15))


def test_classroom_weekends_and_holidays_are_empty():
    room = ClassroomCO2(seed=0, ventilation="poor", holidays=[["2026-01-07", "2026-01-08"]])
    for day in (2, 3, 5, 6):  # Wed-Thu holiday, Sat, Sun
        assert not room.is_school_day(S + day * DAY_S)
        _, occ = room.sample(S + day * DAY_S, S + (day + 1) * DAY_S, 600, "occupants")
        assert max(occ) == 0
        assert room.at(_at_hm(day, 14))["co2_ppm"] < room.outdoor_co2_ppm + 100
    assert room.is_school_day(S + 4 * DAY_S)


def test_classroom_class_size_varies_by_day():
    room = ClassroomCO2(seed=7, pupils=30)
    sizes = [room.at(_at_hm(d, 11))["pupils_today"] for d in range(14) if room.is_school_day(S + d * DAY_S)]
    assert all(10 <= n <= 30 for n in sizes)
    assert len(set(sizes)) > 1


def test_classroom_temperature_and_humidity_are_plausible():
    room = ClassroomCO2(seed=4, ventilation="typical")
    for day in range(5):
        t = room.at(_at_hm(day, 11))["temperature_c"]
        assert 18.5 <= t <= 26.0  # heated and occupied
    _, rh = room.sample(S, S + WEEK_S, 600, "rh_percent")
    assert 15.0 <= min(rh) and max(rh) <= 85.0


# -- pipe -------------------------------------------------------------------------------------
def test_hot_outlet_with_good_supply_is_at_least_50_while_running():
    pipe = PipeOutlet(seed=3, kind="hot")
    flows = [f for f in pipe.flow_intervals(S, S + WEEK_S) if f[1] - f[0] >= 90]
    assert len(flows) >= 5
    for a, b in flows:
        r = pipe.at(a + 90)
        assert r["flowing"] and r["water_c"] >= 50.0 and r["temperature_c"] >= 50.0
    assert pipe.out_of_range_intervals(S, S + 3 * DAY_S, sample_s=20, flowing_only=True) == []


def test_clamp_lags_on_flow_start():
    pipe = PipeOutlet(seed=3, kind="hot")
    a, _ = pipe.flow_intervals(S, S + WEEK_S)[0]
    before, early = pipe.at(a - 1), pipe.at(a + 10)
    assert not before["flowing"] and early["flowing"]
    assert before["temperature_c"] < early["temperature_c"] < early["water_c"]


def test_stagnation_relaxes_toward_ambient():
    pipe = PipeOutlet(seed=3, kind="hot")
    flows = pipe.flow_intervals(S, S + 2 * DAY_S)
    _, end = flows[-1]  # the last draw-off of the day, then a night of stagnation
    rows = [pipe.at(end + 60 * i) for i in range(0, 6 * 60, 10)]
    cooling = [r["water_c"] for r in rows if r["water_c"] > r["ambient_c"] + 1.0]
    assert len(cooling) > 6 and cooling[0] > 45.0
    assert all(b < a for a, b in zip(cooling, cooling[1:]))
    later = pipe.at(end + 6 * HOUR_S)
    assert abs(later["water_c"] - later["ambient_c"]) < 0.5
    assert 19.0 <= later["ambient_c"] <= 25.0


def test_weekly_flush_runs_even_on_a_little_used_outlet():
    pipe = PipeOutlet(seed=5, kind="hot", fault="little_used", flush_weekday="wed", flush_hour=6.0)
    flushes = pipe.flush_times(S, S + 2 * WEEK_S)
    assert len(flushes) == 2
    for a, b in flushes:
        assert weekday(a) == 2 and b - a == 300.0
        r = pipe.at(a + 120)
        assert r["flowing"] and r["temperature_c"] >= 50.0
    # Between flushes the leg sits at room temperature: most of the week in 20-45 deg C.
    assert pipe.growth_band_hours(S + WEEK_S, S + 2 * WEEK_S) > 0.9 * 168


def test_weak_hot_supply_never_reaches_50():
    pipe = PipeOutlet(seed=3, kind="hot", fault="weak_supply", fault_from_s=S + 2 * DAY_S)
    spans = pipe.out_of_range_intervals(S, S + 3 * DAY_S, sample_s=20, flowing_only=True)
    assert spans and all(a >= S + 2 * DAY_S for a, _ in spans)
    flows = [f for f in pipe.flow_intervals(S + 2 * DAY_S, S + WEEK_S) if f[1] - f[0] >= 90]
    assert flows and all(pipe.at(a + 90)["temperature_c"] < 50.0 for a, _ in flows)


def test_cold_outlet_runs_cold_and_warms_when_standing():
    pipe = PipeOutlet(seed=3, kind="cold")
    assert pipe.out_of_range_intervals(S, S + 3 * DAY_S, sample_s=20, flowing_only=True) == []
    flows = [f for f in pipe.flow_intervals(S, S + 2 * DAY_S) if f[1] - f[0] >= 120]
    r = pipe.at(flows[0][0] + 120)
    assert r["temperature_c"] < 15.0
    night = pipe.at(S + DAY_S + 4 * HOUR_S)
    assert night["water_c"] > r["water_c"] + 4.0  # a standing cold leg warms toward the room
    warm = PipeOutlet(seed=3, kind="cold", fault="warm_cold_supply")  # in summer
    assert warm.out_of_range_intervals(JULY_WED, JULY_WED + 3 * DAY_S, sample_s=20, flowing_only=True)


# -- street -----------------------------------------------------------------------------------
def test_weekday_morning_peak_beats_the_night():
    street = StreetNO2(seed=0, site="typical")
    means = dict(street.hourly_means_ppb(S, S + 5 * DAY_S))
    for day in range(5):
        assert means[S + day * DAY_S + 8 * HOUR_S] > means[S + day * DAY_S + 3 * HOUR_S]
    weekday_am = street.at(_at_hm(1, 8, 30))["traffic_veh_h"]
    saturday_am = street.at(_at_hm(5, 8, 30))["traffic_veh_h"]
    assert saturday_am < 0.7 * weekday_am


def test_busy_site_exceeds_hourly_limit_quiet_site_never():
    busy = StreetNO2(seed=0, site="busy")
    hours = busy.hourly_means_ppb(S, S + WEEK_S)
    assert len(hours) == 168
    assert any(v > 104.6 for _, v in hours)
    exceed = busy.exceedance_hours(S, S + WEEK_S)
    assert exceed and all(v > 200.0 for _, v in exceed)
    assert {h for h, _ in exceed} == {h for h, v in hours if ppb_to_ugm3(v) > 200.0}
    for seed in range(3):
        quiet = StreetNO2(seed=seed, site="quiet")
        assert max(v for _, v in quiet.hourly_means_ppb(S, S + WEEK_S, sample_s=120)) < 104.6
        assert quiet.exceedance_hours(S, S + DAY_S) == []


def test_street_weather_is_plausible():
    street = StreetNO2(seed=2)
    for t in range(S, S + 3 * DAY_S, 1800):
        r = street.at(t)
        assert r["no2_ppb"] > 0 and 0.3 <= r["wind_ms"] <= 25.0
        assert 0.0 <= r["rh_percent"] <= 100.0 and -15.0 <= r["temperature_c"] <= 20.0  # January
    summer = street.at(JULY_WED)["temperature_c"]
    assert 12.0 <= summer <= 32.0


# -- bin --------------------------------------------------------------------------------------
def test_bin_fills_between_collections_and_empties_on_collection_days():
    b = StreetBin(seed=0)
    collections = b.collection_times(S, S + 2 * WEEK_S)
    assert len(collections) == 4 and {weekday(c) for c in collections} == {0, 3}
    for c in collections:
        assert b.at(c - 1)["fill_ratio"] > 0.3
        assert b.at(c + 1)["fill_ratio"] < 0.02
    for c1, c2 in zip(collections, collections[1:]):
        assert b.at(c2 - 60)["fill_ratio"] > b.at(c1 + HOUR_S)["fill_ratio"] + 0.3
    assert b.full_intervals(S, S + 2 * WEEK_S)  # a busy weekend fills it past 80 %
    _, fill = b.sample(S, S + 2 * WEEK_S, 300, "fill_ratio")
    assert 0.0 <= min(fill) and max(fill) <= 1.0


def test_bin_distance_matches_fill_and_geometry():
    b = StreetBin(seed=1, empty_distance_cm=110.0, full_distance_cm=28.0)
    lid_seen = 0
    for t in range(S, S + WEEK_S, 600):
        r = b.at(t)
        expected = max(5.0, 110.0 - r["fill_ratio"] * 82.0 - r["bag_bump_cm"])
        assert r["surface_cm"] == pytest.approx(expected)
        if r["lid_open"]:
            lid_seen += 1
            assert 15.0 <= r["distance_cm"] <= 40.0
        else:
            assert r["distance_cm"] == r["surface_cm"]
            if r["bag_bump_cm"] < 0.01 and r["surface_cm"] > 28.0:
                assert driver_fill_ratio(r["distance_cm"], 110.0, 28.0) == pytest.approx(r["fill_ratio"], abs=2e-4)
    assert lid_seen < WEEK_S / 600 * 0.05


def test_lid_opens_at_deposits():
    b = StreetBin(seed=2, lid_left_open_per_day=0.0)
    lids = b.lid_open_intervals(S + 11 * HOUR_S, S + 14 * HOUR_S)  # lunchtime: several deposits
    assert len(lids) >= 2
    for a, end, cm in lids:
        assert 0.0 < end - a <= 8.0
        assert b.at(a + 0.5)["lid_open"] and b.at(a + 0.5)["distance_cm"] == cm
        if not any(x <= end + 0.5 < y for x, y, _ in lids):
            assert not b.at(end + 0.5)["lid_open"]


def test_fly_tipping_is_a_fast_rise():
    tip = S + 3 * DAY_S + 9 * HOUR_S  # Thursday, soon after the collection
    b = StreetBin(seed=0, fly_tip_at_s=tip)
    assert b.fly_tip_times(S, S + WEEK_S) == [tip]
    assert b.at(tip + 1800)["fill_ratio"] - b.at(tip - 60)["fill_ratio"] >= 0.45
    rises = b.fast_rises(S, S + WEEK_S)
    assert any(tip <= r <= tip + HOUR_S for r in rises)
    plain = StreetBin(seed=0)
    assert not any(tip <= r <= tip + HOUR_S for r in plain.fast_rises(S, S + WEEK_S))


def test_random_fly_tips_and_missed_collections():
    b = StreetBin(seed=3, fly_tips_per_week=3.0, missed_collection_prob=1.0)
    assert b.collection_times(S, S + WEEK_S) == []
    assert len(b.fly_tip_times(S, S + 4 * WEEK_S)) >= 4
    late = b.at(S + WEEK_S - 60)
    assert late["fill_ratio"] > 0.95 and late["overflow_l"] > 0.0


# -- ground-truth helpers (pure) ----------------------------------------------------------------
def test_series_helpers():
    times = [0, 60, 120, 180, 240, 300]
    assert intervals_where(times, [0, 1, 1, 0, 1, 1], 60) == [(60, 180), (240, 360)]
    assert intervals_where(times, [0, 1, 1, 0, 1, 1], 60, min_duration_s=121) == []
    assert window_means([0, 1800, 3600, 5400], [1.0, 3.0, 10.0, 20.0], 3600) == [(0, 2.0), (3600, 15.0)]
    assert rise_events(times, [0.0, 0.1, 0.5, 0.5, 0.6, 0.2], 0.3, 120) == [120]
