"""The gateway's alarm rules: each kind raises after its duration and not before, clears with
its hysteresis, ignores flagged values; rules load from the profile TOMLs; state survives
JSON and rolls back. Then agreement with the environment models' ground truth
(``simulators.environment``: ``co2_exceedances``, ``exceedance_hours``, ``full_intervals``,
``fast_rises``, ``growth_band_hours``) and with readings through the real SCD41 driver."""

import datetime
import json
import pathlib
import tomllib
import zoneinfo

import pytest

from drivers.no2b43f import ppb_to_ugm3
from gateway.alarms import AlarmEngine, build_rule, rules_from_profile
from simulators.daysim import ClassroomNode
from simulators.environment import ClassroomCO2, PipeOutlet, StreetBin, StreetNO2

PROFILES = pathlib.Path(__file__).resolve().parents[2] / "hardware" / "profiles"
DAY = 86400
MONDAY = (datetime.date(2026, 2, 16) - datetime.date(1970, 1, 1)).days * DAY  # 2026-02-16
T0 = MONDAY + 9 * 3600


def profile(name):
    return tomllib.loads((PROFILES / (name + ".toml")).read_text())


def rule(**spec):
    spec.setdefault("id", "r")
    spec.setdefault("quantity", "co2_ppm")
    return build_rule(spec)


def feed(engine, samples, quantity="co2_ppm", dev="d", epoch=1, seq0=0):
    """Events from ``samples``: (t, value) or (t, value, flag); records keyed by their index."""
    out = []
    for i, s in enumerate(samples):
        flag = s[2] if len(s) > 2 else "ok"
        out += engine.observe(dev, epoch, {"seq": seq0 + i, "t": s[0],
                                           "values": [[quantity, s[1], flag]]})
    return out


def steady(t0, n, value, step=120):
    return [(t0 + i * step, value) for i in range(n)]


def kinds(events):
    return [(e.kind, e.rule_id) for e in events]


# -- rules from data --------------------------------------------------------------------------
def test_every_profiles_alarm_tables_load():
    assert [r.id for r in rules_from_profile(profile("classroom-co2"))] == [
        "co2_high_20min", "co2_daily_mean_high"]
    assert [r.id for r in rules_from_profile(profile("bin-level"))] == ["bin_full", "bin_fast_rise"]
    assert [r.id for r in rules_from_profile(profile("street-no2"))] == [
        "no2_hourly_mean_over_200", "no2_alert_threshold", "no2_annual_mean_over_40"]
    leg = profile("legionella-outlet")
    assert [r.id for r in rules_from_profile(leg, {"outlet": "hot"})] == [
        "hot_outlet_below_50", "hours_in_growth_band", "hot_flush_test"]
    cold = rules_from_profile(leg, {"outlet": "cold"})
    assert [r.id for r in cold] == ["cold_outlet_at_or_above_20", "hours_in_growth_band",
                                    "cold_flush_test"]
    assert (cold[2].target, cold[2].within_s, cold[2].sample_max_s) == (20, 120, 15.0)
    # an outlet of unknown kind gets only the rules that apply to every outlet
    assert [r.id for r in rules_from_profile(leg)] == ["hours_in_growth_band"]


def test_overrides_come_from_the_gateway_configuration():
    co2 = rules_from_profile(profile("classroom-co2"), overrides={
        "co2_high_20min": {"hysteresis": 0, "clear_for_s": 0},
        "co2_daily_mean_high": {"hours": ["08:45", "15:15"], "weekdays": ["mon", "fri"]}})
    assert (co2[0].clear_below, co2[0].clear_for_s) == (1500, 0)
    assert co2[1].hours == (31500, 54900) and co2[1].weekdays == {0, 4}
    no2 = rules_from_profile(profile("street-no2"),
                             overrides={"no2_annual_mean_over_40": {"enabled": False}})
    assert [r.id for r in no2] == ["no2_hourly_mean_over_200", "no2_alert_threshold"]
    with pytest.raises(ValueError, match="no_such_rule"):
        rules_from_profile(profile("classroom-co2"), overrides={"no_such_rule": {}})


@pytest.mark.parametrize("spec, match", [
    ({"rule": "above_for", "threshold": 1, "duration_s": 1, "colour": "red"},
     "unknown key 'colour'"),
    ({"rule": "above_for", "duration_s": 1}, "'threshold' is required"),
    ({"rule": "above_for", "threshold": "high", "duration_s": 1}, "threshold must be a finite"),
    ({"rule": "above_for", "threshold": 10, "duration_s": 1, "clear_below": 11}, "clear_below"),
    ({"rule": "mean_above", "threshold": 1, "window": "week"}, "window must be one of"),
    ({"rule": "mean_above", "threshold": 1, "window": "hour", "hours": ["08:00", "09:00"]},
     "hours needs window 'day'"),
    ({"rule": "mean_above", "threshold": 1, "window": "day", "hours": ["8am", "9"]}, "HH:MM"),
    ({"rule": "at_or_above", "threshold": 1, "consecutive": 0}, "consecutive must be >= 1"),
    ({"rule": "rise", "delta": 0, "within_s": 10}, "delta must be > 0"),
    ({"rule": "sometimes"}, "rule 'sometimes' is not one of"),
    ({"rule": "at_or_above", "threshold": 1, "quantity": "boot_reason"}, "not a numeric quantity"),
    ({"rule": "at_or_above", "threshold": 1, "severity": "dire"}, "severity must be one of"),
    ({"rule": "flush_time", "target": 50, "within_s": 60, "direction": "sideways"}, "direction"),
])
def test_a_bad_rule_is_refused_naming_the_rule_and_key(spec, match):
    with pytest.raises(ValueError, match="alarm rule 'r'.*" + match):
        rule(**spec)


# -- above_for: CO2 > 1500 ppm for 20 min -----------------------------------------------------
def co2_20min(**kw):
    spec = dict(id="co2", rule="above_for", threshold=1500, duration_s=1200)
    spec.update(kw)
    return AlarmEngine({"d": [rule(**spec)]})


def test_above_for_raises_after_its_duration_and_not_before():
    eng = co2_20min()
    assert feed(eng, steady(T0, 10, 1600)) == []  # 18 min above
    ev = feed(eng, [(T0 + 1200, 1650)], seq0=10)
    assert kinds(ev) == [("raised", "co2")]
    assert (ev[0].since, ev[0].at, ev[0].value) == (T0, T0 + 1200, 1650)
    assert feed(eng, steady(T0 + 1320, 5, 1700), seq0=11) == []  # raised once


def test_above_for_needs_the_value_strictly_above_and_unbroken():
    eng = co2_20min()
    samples = steady(T0, 8, 1600) + [(T0 + 960, 1500)] + steady(T0 + 1080, 11, 1600)
    ev = feed(eng, samples)
    assert [(e.kind, e.since) for e in ev] == [("raised", T0 + 1080)]


def test_above_for_clears_only_below_the_hysteresis_level_held_long_enough():
    eng = co2_20min()  # defaults: clear below 1425 ppm (5 %) for 300 s
    feed(eng, steady(T0, 11, 1600))
    t = T0 + 1320
    assert feed(eng, steady(t, 15, 1450), seq0=11) == []  # under 1500, not under 1425
    t += 1800
    assert feed(eng, [(t, 1400), (t + 120, 1400), (t + 240, 1460), (t + 360, 1400),
                      (t + 480, 1400), (t + 600, 1400)], seq0=30) == []
    ev = feed(eng, [(t + 660, 1390)], seq0=36)
    assert [(e.kind, e.since, e.value) for e in ev] == [("cleared", t + 360, 1390)]
    assert ev[0].detail["raised_since"] == T0


def test_above_for_restarts_after_a_gap_in_valid_data():
    eng = co2_20min()
    samples = steady(T0, 5, 1600) + steady(T0 + 480 + 1300, 10, 1600)
    assert feed(eng, samples) == []  # 1300 s without data: the run must be seen again
    ev = feed(eng, [(T0 + 480 + 1300 + 1200, 1600)], seq0=15)
    assert ev[0].since == T0 + 480 + 1300


def test_flagged_values_are_left_out_and_time_unsynced_values_count():
    eng = co2_20min()
    spikes = [(T0 + i * 120, 3000, "spike") for i in range(20)]
    assert feed(eng, spikes) == [] and eng.counters["excluded_flagged"] == 20
    t = T0 + 2400
    run = [(t + i * 120, 1600, "stuck" if i % 3 == 1 else "time_unsynced") for i in range(12)]
    ev = feed(eng, run, seq0=20)  # stuck values neither count nor break the run
    assert [(e.kind, e.since) for e in ev] == [("raised", t)]


def test_an_untimed_record_is_timed_by_the_gateways_receive_time():
    eng = co2_20min(duration_s=0)
    rec = {"seq": 1, "t": None, "values": [["co2_ppm", 1600, "time_unsynced"]]}
    assert eng.observe("d", 1, rec) == [] and eng.counters["skipped_untimed"] == 1
    ev = eng.observe("d", 1, dict(rec, seq=2), received_s=T0)
    assert ev[0].since == T0 and ev[0].at == T0


# -- daily mean: 24 h by default, the school day when the configuration says ----------------
def _school_day(t0, step=300):
    return [(t0 + i * step, 2000 if 31500 <= (i * step) < 54900 else 500)
            for i in range(DAY // step)]


def test_the_daily_mean_is_over_24_hours_unless_restricted_to_the_school_day():
    spec = dict(id="mean", rule="mean_above", window="day", threshold=1500)
    whole = AlarmEngine({"d": [rule(**spec)]})
    school = AlarmEngine({"d": [rule(hours=["08:45", "15:15"], **spec)]})
    samples = _school_day(MONDAY) + [(MONDAY + DAY, 500)]
    assert feed(whole, samples) == []  # (6.5 h x 2000 + 17.5 h x 500) / 24 h = 906 ppm
    ev = feed(school, samples)
    assert [(e.kind, e.since, e.at, e.value) for e in ev] == [("raised", MONDAY, MONDAY + DAY,
                                                               2000)]
    assert ev[0].detail["samples"] == 78


def test_days_follow_local_time():
    london = zoneinfo.ZoneInfo("Europe/London")
    july = datetime.datetime(2026, 7, 1, tzinfo=london).timestamp()  # 23:00 UTC on 30 June
    eng = AlarmEngine({"d": [rule(rule="max_below", window="day", threshold=50,
                                  quantity="temperature_c")]}, tz=london)
    ev = feed(eng, [(july - 3600, 40), (july - 60, 40), (july + 60, 60)], "temperature_c")
    assert [(e.kind, e.since) for e in ev] == [("raised", july - DAY)]


# -- hourly NO2 mean (UK AQS) ---------------------------------------------------------------
def _hour(h0, values):
    step = 3600 // len(values)
    return [(h0 + i * step, v) for i, v in enumerate(values)]


def test_the_hourly_mean_raises_when_the_hour_closes_and_clears_on_the_next_good_hour():
    eng = AlarmEngine({"s": rule_list("street-no2")})
    h = T0
    exactly = _hour(h, [150, 250] * 30)  # mean 200: not above the limit
    above = _hour(h + 3600, [190, 212] * 30)  # mean 201
    ev = feed(eng, exactly + above, "no2_ugm3", "s")
    assert ev == []  # the hour above has not closed yet
    ev = feed(eng, _hour(h + 7200, [150] * 60), "no2_ugm3", "s", seq0=120)
    assert [(e.kind, e.rule_id, e.since, e.at, e.value) for e in ev] == [
        ("raised", "no2_hourly_mean_over_200", h + 3600, h + 7200, 201)]
    assert ev[0].detail["exceedances_this_year"] == 1 and ev[0].detail["allowed_per_year"] == 18
    ev = feed(eng, [(h + 3 * 3600, 150)], "no2_ugm3", "s", seq0=180)
    assert [(e.kind, e.since, e.value) for e in ev] == [("cleared", h + 7200, 150)]


def test_the_alert_threshold_needs_three_consecutive_hours():
    eng = AlarmEngine({"s": [r for r in rule_list("street-no2") if r.id == "no2_alert_threshold"]})
    means = [450, 450, 300, 450, 450, 450, 100]
    samples = [s for i, m in enumerate(means) for s in _hour(T0 + i * 3600, [m] * 4)]
    ev = feed(eng, samples + [(T0 + 7 * 3600, 100)], "no2_ugm3", "s")
    assert [(e.kind, e.since, e.at) for e in ev] == [
        ("raised", T0 + 3 * 3600, T0 + 6 * 3600), ("cleared", T0 + 6 * 3600, T0 + 7 * 3600)]
    assert ev[0].detail["consecutive"] == 3


def test_exceedances_are_counted_per_calendar_year():
    eng = AlarmEngine({"s": [rule(id="h", rule="mean_above", window="hour", threshold=200,
                                  quantity="no2_ugm3", allowed_per_year=1)]})
    new_year = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    samples = [(new_year - 7200, 300), (new_year - 3600, 100), (new_year - 1800, 300),
               (new_year, 300), (new_year + 3600, 100), (new_year + 7200, 300),
               (new_year + 10800, 100)]
    raised = [e for e in feed(eng, samples, "no2_ugm3", "s") if e.kind == "raised"]
    assert [e.detail["exceedances_this_year"] for e in raised] == [1, 1, 2]
    assert [e.detail["allowance_exceeded"] for e in raised] == [False, False, True]


def test_a_window_with_too_few_valid_samples_decides_nothing():
    eng = AlarmEngine({"s": [rule(id="h", rule="mean_above", window="hour", threshold=200,
                                  quantity="no2_ugm3", min_samples=45)]})
    samples = [(T0 + i * 60, 300, "ok" if i % 2 else "sensor_failed") for i in range(60)]
    assert feed(eng, samples + [(T0 + 3600, 0)], "no2_ugm3", "s") == []


def rule_list(name, attributes=None):
    return rules_from_profile(profile(name), attributes)


# -- bin full and fast rise -------------------------------------------------------------------
def _bin(values, t0=T0, step=1800):
    return [(t0 + i * step, v) for i, v in enumerate(values)]


def test_bin_full_ignores_one_lid_reading_and_clears_with_hysteresis():
    eng = AlarmEngine({"b": [r for r in rule_list("bin-level") if r.id == "bin_full"]})
    assert feed(eng, _bin([0.5, 0.95, 0.5, 0.6]), "fill_ratio", "b") == []
    t = T0 + DAY
    ev = feed(eng, _bin([0.81, 0.85, 0.78, 0.79, 0.7, 0.9, 0.1, 0.05], t), "fill_ratio", "b",
              seq0=4)
    assert [(e.kind, e.since) for e in ev] == [("raised", t), ("cleared", t + 6 * 1800)]


def test_a_fast_rise_raises_and_a_slow_one_does_not():
    eng = AlarmEngine({"b": [r for r in rule_list("bin-level") if r.id == "bin_fast_rise"]})
    slow = [0.1 + 0.04 * i for i in range(11)]  # +0.4 over 5 h, never 0.3 in 2 h
    assert feed(eng, _bin(slow), "fill_ratio", "b") == []
    fast = [0.5, 0.55, 0.9, 0.92, 0.93, 0.93, 0.94, 0.94]
    ev = feed(eng, _bin(fast, T0 + DAY), "fill_ratio", "b", seq0=20)
    assert [(e.kind, round(e.value, 2)) for e in ev] == [("raised", 0.92), ("cleared", 0.94)]
    assert ev[0].since == T0 + DAY + 3600 and ev[0].detail["from_value"] == 0.5


# -- legionella outlets -----------------------------------------------------------------------
def test_hot_outlet_below_50_for_a_whole_day_raises_and_a_hot_day_clears():
    eng = AlarmEngine({"o": rule_list("legionella-outlet", {"outlet": "hot"})})
    cool = [(MONDAY + i * 300, 30 + (i % 50) * 0.3) for i in range(288)]  # max 44.7
    hot = [(MONDAY + DAY + i * 300, 55 if i == 100 else 30) for i in range(288)]
    ev = feed(eng, cool + hot + [(MONDAY + 2 * DAY, 30)], "temperature_c", "o")
    alarms = [(e.kind, e.rule_id, e.since, round(e.value, 1)) for e in ev if e.kind != "report"]
    assert alarms == [("raised", "hot_outlet_below_50", MONDAY, 44.7),
                      ("cleared", "hot_outlet_below_50", MONDAY + DAY, 55)]
    reports = [round(e.value, 4) for e in ev if e.rule_id == "hours_in_growth_band"]
    assert reports == [24.0, round(24 - 300 / 3600, 4)]


def test_cold_outlet_that_never_falls_below_20_raises():
    eng = AlarmEngine({"o": [r for r in rule_list("legionella-outlet", {"outlet": "cold"})
                             if r.id == "cold_outlet_at_or_above_20"]})
    ev = feed(eng, [(MONDAY + i * 3600, 20 + i % 3) for i in range(25)], "temperature_c", "o")
    assert [(e.kind, e.value) for e in ev] == [("raised", 20)]


def test_hours_in_the_growth_band_count_each_sample_until_the_next():
    eng = AlarmEngine({"o": [rule(id="band", rule="time_in_band", window="day", lo=20, hi=45,
                                  quantity="temperature_c", threshold_h=5)]})
    samples = [(MONDAY + i * 600, 30 if i < 36 else 55) for i in range(144)]
    ev = feed(eng, samples + [(MONDAY + DAY + 600, 30)], "temperature_c", "o")
    assert [(e.kind, e.value) for e in ev] == [("report", 6.0), ("raised", 6.0)]


def _flush(t0, temps, step=10):
    return [(t0 + i * step, v) for i, v in enumerate(temps)]


def test_the_hse_flush_test_times_a_hot_outlet_to_50_within_a_minute():
    eng = AlarmEngine({"o": [r for r in rule_list("legionella-outlet", {"outlet": "hot"})
                             if r.id == "hot_flush_test"]})
    good = _flush(T0, [22, 22, 30, 40, 46, 50.5, 55, 56])  # 50 reached 40 s after the last still
    ev = feed(eng, good, "temperature_c", "o")
    assert [(e.kind, e.detail["elapsed_s"], e.detail["passed"]) for e in ev] == [
        ("report", 40, True)]
    weak = _flush(T0 + 3600, [22, 22, 30, 38, 42, 44, 45, 45.5, 45.6, 45.6])
    ev = feed(eng, weak, "temperature_c", "o", seq0=10)
    assert [(e.kind, e.since, e.detail["passed"]) for e in ev] == [
        ("report", T0 + 3610, False), ("raised", T0 + 3610, False)]
    ev = feed(eng, _flush(T0 + 7200, [22, 35, 52]), "temperature_c", "o", seq0=30)
    assert [e.kind for e in ev] == ["report", "cleared"]
    # the routine 5-minute interval cannot time a flush: no verdict
    assert feed(eng, _flush(T0 + 9000, [22, 40, 55, 20, 45], 300), "temperature_c", "o",
                seq0=40) == []


# -- order, ticks, state ----------------------------------------------------------------------
def test_duplicates_and_reordered_records_are_not_evaluated_twice():
    eng = co2_20min(duration_s=0)
    assert kinds(feed(eng, [(T0, 1600)], seq0=5)) == [("raised", "co2")]
    assert feed(eng, [(T0, 1600)], seq0=5) == [] and eng.counters["skipped_duplicate"] == 1
    assert feed(eng, [(T0 - 60, 1000)], seq0=3) == []
    assert feed(eng, [(T0 - 60, 1000)], seq0=6) == [] and eng.counters["skipped_late"] == 1
    assert feed(eng, [(T0 - 60, 1000)], epoch=2) == []  # a new boot epoch, but older time


def test_tick_closes_a_quiet_devices_window_and_its_late_records_are_ignored():
    eng = AlarmEngine({"s": [rule(id="h", rule="mean_above", window="hour", threshold=200,
                                  quantity="no2_ugm3")]})
    feed(eng, _hour(T0, [300] * 4), "no2_ugm3", "s")
    assert eng.tick(T0 + 3599) == []
    ev = eng.tick(T0 + 3700)
    assert [(e.kind, e.since, e.at) for e in ev] == [("raised", T0, T0 + 3700)]
    assert feed(eng, [(T0 + 3500, 0)], "no2_ugm3", "s", seq0=10) == []
    assert eng.counters["skipped_late"] == 1


def test_changed_says_whether_anything_since_the_commit_touched_a_state():
    eng = AlarmEngine({"s": [rule(id="h", rule="mean_above", window="hour", threshold=200,
                                  quantity="no2_ugm3")]})
    assert not eng.changed()
    feed(eng, _hour(T0, [100] * 4), "no2_ugm3", "s")
    assert eng.changed()
    eng.commit()
    assert not eng.changed()
    assert eng.tick(T0 + 3599) == [] and not eng.changed()  # no window ended: untouched
    assert eng.tick(T0 + 3700) == [] and eng.changed()  # the hour closed, without an event
    eng.rollback()
    assert not eng.changed()


def _stream():
    return (steady(T0, 30, 1600) + steady(T0 + 3600, 30, 1300) + steady(T0 + 7200, 15, 1700)
            + steady(T0 + 9000, 40, 900))


def test_state_survives_json_mid_stream():
    rules = rule_list("classroom-co2")
    whole = AlarmEngine({"d": rules})
    expected = feed(whole, _stream())
    first = AlarmEngine({"d": rules})
    got = feed(first, _stream()[:50])
    second = AlarmEngine({"d": rules}, state=json.loads(json.dumps(first.state())))
    got += feed(second, _stream()[50:], seq0=50)
    assert [e.to_dict() for e in got] == [e.to_dict() for e in expected]
    assert len(expected) == 4


def test_rollback_forgets_what_was_evaluated_since_the_commit():
    eng = co2_20min(duration_s=0)
    feed(eng, [(T0, 1000)])
    eng.commit()
    assert kinds(feed(eng, [(T0 + 120, 1600)], seq0=1)) == [("raised", "co2")]
    eng.rollback()
    assert eng.active("d") == []
    assert kinds(feed(eng, [(T0 + 120, 1600)], seq0=1)) == [("raised", "co2")]


def test_active_count_follows_raises_clears_rollbacks_and_a_resumed_state():
    def counted(eng):  # what the kept count must equal: every rule state, counted afresh
        return sum(1 for dev in ("a", "b") for _ in eng.active(dev))

    eng = AlarmEngine({"a": [rule(id="co2", rule="above_for", threshold=1500, duration_s=0)],
                       "b": [rule(id="co2", rule="above_for", threshold=1500, duration_s=0)]})
    seen = []
    for dev, value, seq, then in (("a", 1600, 0, "commit"), ("b", 1600, 0, None),
                                  ("b", 1700, 1, "rollback"), ("b", 1600, 0, "commit"),
                                  ("a", 1000, 1, None), ("a", 1000, 2, "commit")):
        feed(eng, [(T0 + 300 * seq, value)], dev=dev, seq0=seq)
        if then == "commit":
            eng.commit()
        elif then == "rollback":
            eng.rollback()
        seen.append(eng.active_count())
        assert eng.active_count() == counted(eng)
    assert seen[:4] == [1, 2, 1, 2]  # uncommitted raises count; a rollback takes them back
    feed(eng, [(T0 + 900, 1000), (T0 + 1200, 1000)], dev="a", seq0=3)
    eng.commit()
    resumed = AlarmEngine(eng._rules, state=json.loads(json.dumps(eng.state())))
    assert resumed.active_count() == eng.active_count() == counted(eng) == 1


@pytest.mark.parametrize("state", [None, [], {"v": 9, "devices": {}},
                                   {"v": 1, "devices": {"d": {"k": [1], "r": {}}}},
                                   {"v": 1, "devices": {"d": {"k": None, "r": {"x": 3}}}}])
def test_a_malformed_alarm_state_is_refused(state):
    with pytest.raises(ValueError, match="alarm state"):
        AlarmEngine({}, state=state if state is not None else "junk")


@pytest.mark.parametrize("bad", [{"on": True, "c": "x"}, {"_t": "yesterday"}, {"l": "x"}])
def test_a_corrupt_rule_state_resets_that_rule_and_is_counted(bad):
    eng = co2_20min(duration_s=0)
    eng.load_state({"v": 1, "devices": {"d": {"k": None, "r": {"co2": bad}}}})
    assert feed(eng, [(T0, 1000)]) == [] and eng.counters["rule_errors"] == 1
    assert kinds(feed(eng, [(T0 + 60, 1600)], seq0=1)) == [("raised", "co2")]


def test_a_corrupt_window_state_is_reset_on_tick():
    eng = AlarmEngine({"s": [rule(id="h", rule="mean_above", window="hour", threshold=200,
                                  quantity="no2_ugm3")]})
    eng.load_state({"v": 1, "devices": {"s": {"k": None, "r": {"h": {"w": [T0, T0 + 3600],
                                                                     "a": "junk"}}}}})
    assert eng.tick(T0 + 7200) == [] and eng.counters["rule_errors"] == 1
    assert eng.tick(T0 + 7300) == []


# -- agreement with the environment models' ground truth ------------------------------------


def _model_stream(model, key, quantity, start, end, step, convert=None):
    times, values = model.sample(start, end, step, key)
    return [{"seq": i, "t": int(t), "values": [[quantity, convert(v) if convert else v, "ok"]]}
            for i, (t, v) in enumerate(zip(times, values))]


def _run(rules, records, dev="d"):
    eng = AlarmEngine({dev: rules})
    return [e for r in records for e in eng.observe(dev, 1, r)]


def _spans(events, rule_id):
    """[(since, cleared_since, raised_at, cleared_at)] of ``rule_id``'s alarms (None: open)."""
    out = []
    for e in events:
        if e.rule_id == rule_id and e.kind == "raised":
            out.append([e.since, None, e.at, None])
        elif e.rule_id == rule_id and e.kind == "cleared":
            out[-1][1], out[-1][3] = e.since, e.at
    return out


def _daily(events, rule_id, days):
    """Whether ``rule_id``'s alarm stood after each day's window closed."""
    by_day = {e.since: e.kind for e in events if e.rule_id == rule_id and e.kind != "report"}
    state, out = False, []
    for d in range(days):
        state = {"raised": True, "cleared": False}.get(by_day.get(MONDAY + d * DAY), state)
        out.append(state)
    return out


def test_co2_alarms_match_the_classroom_models_exceedances():
    model = ClassroomCO2(seed=1, ventilation="poor")
    week = _model_stream(model, "co2_ppm", "co2_ppm", MONDAY, MONDAY + 7 * DAY, 120)
    truth = model.co2_exceedances(MONDAY, MONDAY + 7 * DAY, sample_s=120)
    assert len(truth) == 10  # two a school day: before and after lunch
    # without hysteresis the alarm is the truth interval itself
    exact = rules_from_profile(profile("classroom-co2"), overrides={
        "co2_high_20min": {"hysteresis": 0, "clear_for_s": 0}})
    spans = _spans(_run(exact, week), "co2_high_20min")
    assert [(s, c_at) for s, _, _, c_at in spans] == truth
    assert all(1200 <= at - s < 1200 + 120 for s, _, at, _ in spans)
    # with the profile's defaults each alarm starts with a truth interval and covers it
    spans = _spans(_run(rules_from_profile(profile("classroom-co2")), week), "co2_high_20min")
    assert len(spans) == len(truth)
    for (s, _, _, c_at), (a, b) in zip(spans, truth):
        assert abs(s - a) <= 120 and c_at >= b


def test_co2_alarms_from_the_real_driver_agree_within_one_sampling_interval():
    node = ClassroomNode(1, ventilation="poor", start_wall_s=MONDAY)
    eng = AlarmEngine({"rm": rules_from_profile(profile("classroom-co2"))})
    start, events = node.clock.monotonic_s(), []
    for i in range(DAY // 120):
        node.clock.advance_to_s(start + i * 120)
        co2 = node.read()[0][1]  # SCD41 through drivers.scd4x on the simulated bus
        rec = {"seq": i, "t": int(node.clock.wall_s()), "values": [["co2_ppm", co2, "ok"]]}
        events += eng.observe("rm", 1, rec)
    truth = node.env.co2_exceedances(MONDAY, MONDAY + DAY, sample_s=120)
    raised = [e.since for e in events if e.kind == "raised"]
    assert len(raised) == len(truth) == 2
    assert all(abs(s - a) <= 120 for s, (a, _) in zip(raised, truth))


def test_the_school_day_mean_matches_the_models_mean():
    model = ClassroomCO2(seed=1, ventilation="poor")
    days = _model_stream(model, "co2_ppm", "co2_ppm", MONDAY, MONDAY + 7 * DAY + 60, 60)
    rules = rules_from_profile(profile("classroom-co2"), overrides={
        "co2_daily_mean_high": {"hours": ["08:45", "15:15"]}})
    events = [e for e in _run(rules, days) if e.rule_id == "co2_daily_mean_high"]
    truth = [model.mean_co2_ppm(MONDAY + d * DAY + 31500, MONDAY + d * DAY + 54900, sample_s=60)
             for d in range(7)]
    assert _daily(events, "co2_daily_mean_high", 7) == [m > 1500 for m in truth]
    assert sum(truth[:5]) / 5 > 1500 and max(truth[5:]) < 500  # school days; the weekend
    for e in events:  # each decision carries the window's mean
        assert e.value == pytest.approx(truth[int(e.since - MONDAY) // DAY], rel=1e-12)
    # over 24 h (the profile's window) a classroom's nights pull the mean under 1500 ppm
    whole = [e for e in _run(rules_from_profile(profile("classroom-co2")), days)
             if e.rule_id == "co2_daily_mean_high"]
    assert whole == [] and max(model.mean_co2_ppm(MONDAY + d * DAY, MONDAY + (d + 1) * DAY, 60)
                               for d in range(7)) < 1500


def test_no2_alarms_cover_exactly_the_models_exceedance_hours():
    model = StreetNO2(seed=2, site="busy")
    week = _model_stream(model, "no2_ppb", "no2_ugm3", MONDAY, MONDAY + 7 * DAY + 3600, 60,
                         ppb_to_ugm3)
    events = _run(rule_list("street-no2"), week, "s")
    alarmed = set()
    for since, cleared, _, _ in _spans(events, "no2_hourly_mean_over_200"):
        alarmed.update(range(int(since), int(cleared or MONDAY + 7 * DAY), 3600))
    truth = {int(h) for h, _ in model.exceedance_hours(MONDAY, MONDAY + 7 * DAY)}
    assert len(truth) >= 3 and alarmed == truth


def test_bin_alarms_match_the_models_full_intervals_and_fast_rises():
    for seed in range(3):
        model = StreetBin(seed=seed, fly_tips_per_week=1.0)
        stream = _model_stream(model, "fill_ratio", "fill_ratio", MONDAY, MONDAY + 14 * DAY, 1800)
        events = _run(rule_list("bin-level"), stream, "b")
        full = model.full_intervals(MONDAY, MONDAY + 14 * DAY, sample_s=1800)
        spans = _spans(events, "bin_full")
        # every alarm starts where a truth interval starts; debounced by 2 readings and held
        # by the hysteresis, the alarms cover every truth interval of 2 readings or more
        assert {s for s, _, _, _ in spans} <= {a for a, _ in full}
        for a, b in full:
            if b - a >= 3600:
                assert any(s <= a and (c is None or c >= b) for s, _, _, c in spans), (seed, a)
        rises = model.fast_rises(MONDAY, MONDAY + 14 * DAY, rise_ratio=0.3, window_s=7200,
                                 sample_s=1800)
        assert [s for s, _, _, _ in _spans(events, "bin_fast_rise")] == rises, seed
        tips = model.fly_tip_times(MONDAY, MONDAY + 14 * DAY)  # what makes a fast rise here
        assert rises and all(any(0 <= r - f <= 3600 for f in tips) for r in rises)


@pytest.mark.parametrize("kind, fault", [("hot", None), ("hot", "weak_supply"),
                                         ("hot", "little_used"), ("cold", None),
                                         ("cold", "warm_cold_supply")])
def test_outlet_verdicts_match_the_pipe_model(kind, fault):
    model = PipeOutlet(seed=3, kind=kind, fault=fault)
    week = _model_stream(model, "temperature_c", "temperature_c", MONDAY, MONDAY + 7 * DAY + 300,
                         300)
    events = _run(rule_list("legionella-outlet", {"outlet": kind}), week, "o")
    rule_id = "hot_outlet_below_50" if kind == "hot" else "cold_outlet_at_or_above_20"
    verdicts = _daily(events, rule_id, 7)
    truth = []
    for d in range(7):
        _, temps = model.sample(MONDAY + d * DAY, MONDAY + (d + 1) * DAY, 300, "temperature_c")
        truth.append(max(temps) < 50 if kind == "hot" else min(temps) >= 20)
    assert verdicts == truth
    hours = [e.value for e in events if e.rule_id == "hours_in_growth_band"]
    assert hours == pytest.approx([model.growth_band_hours(MONDAY + d * DAY, MONDAY + (d + 1) * DAY,
                                                           sample_s=300) for d in range(7)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind, fault", [("hot", None), ("hot", "weak_supply"), ("cold", None)])
def test_flush_test_verdicts_match_the_time_the_model_takes(seed, kind, fault):
    model = PipeOutlet(seed=seed, kind=kind, fault=fault)
    flow_start, _ = model.flush_times(MONDAY, MONDAY + 7 * DAY)[0]
    t0 = int(flow_start) - 600
    stream = _model_stream(model, "temperature_c", "temperature_c", t0, t0 + 1800, 10)
    rules = [r for r in rule_list("legionella-outlet", {"outlet": kind})
             if r.kind == "flush_time"]
    reports = [e for e in _run(rules, stream, "o") if e.kind == "report"]
    target, limit = (50, 60) if kind == "hot" else (20, 120)
    times, temps = model.sample(t0, t0 + 1800, 10, "temperature_c")
    reached = [t for t, v in zip(times, temps) if t >= flow_start
               and (v >= target if kind == "hot" else v < target)]
    truth_s = reached[0] - flow_start if reached else None
    assert len(reports) == 1
    assert abs(reports[0].since - flow_start) <= 10  # the run is found within one interval
    if truth_s is not None and truth_s <= limit - 10:
        assert reports[0].detail["passed"]
    if truth_s is None or truth_s > limit + 10:
        assert not reports[0].detail["passed"]


def test_absurd_values_are_left_out_so_the_state_stays_storable():
    # Two readings of 1.7e308 ppm flagged ok used to push a daily mean's running sum to
    # infinity: the state could not be stored and every batch of the gateway failed.
    eng = AlarmEngine({"d": [rule(id="mean", rule="mean_above", window="day", threshold=1500)]})
    samples = [(MONDAY, 1.7e308), (MONDAY + 60, 1.7e308), (MONDAY + 120, -1e300),
               (MONDAY + 180, 600)] + steady(MONDAY + 240, 5, 700)
    feed(eng, samples)
    json.dumps(eng.state(), allow_nan=False)  # raises ValueError if anything went infinite
    assert json.loads(eng.state_json()) == eng.state()
    assert eng.counters["excluded_flagged"] == 3
    ev = feed(eng, [(MONDAY + DAY + 60, 700)], seq0=100)
    assert ev == []  # the mean of the sane values (about 690 ppm) is below 1500
