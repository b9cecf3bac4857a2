"""The quality-flag checker: each flag from a plain sequence of readings."""

import pytest

from protocol import quality as q


def flags(checker, quantity, values):
    return [checker.check(quantity, v) for v in values]


def test_in_range_steady_readings_are_ok():
    c = q.QualityChecker()
    assert flags(c, "co2_ppm", [420, 431, 455, 470, 462]) == [q.OK] * 5


def test_out_of_range_both_sides():
    c = q.QualityChecker({"rh_percent": {"lo": 0, "hi": 100}})
    assert flags(c, "rh_percent", [-0.5, 50, 100.5]) == [q.OUT_OF_RANGE, q.OK, q.OUT_OF_RANGE]


def test_single_spike_is_flagged_and_does_not_move_the_reference():
    c = q.QualityChecker({"co2_ppm": {"max_step": 300}})
    assert flags(c, "co2_ppm", [600, 610, 4000, 615, 620]) == [q.OK, q.OK, q.SPIKE, q.OK, q.OK]


def test_confirmed_level_change_is_accepted_after_one_flag():
    c = q.QualityChecker({"temperature_c": {"max_step": 10}})
    # a hot tap runs: 22 -> 58 -> 59 is a real change, confirmed by the second reading
    assert flags(c, "temperature_c", [22.0, 58.0, 59.0, 59.5]) == [q.OK, q.SPIKE, q.OK, q.OK]


def test_stuck_after_n_identical_values():
    c = q.QualityChecker({"co2_ppm": {"stuck_n": 4}})
    assert flags(c, "co2_ppm", [500, 500, 500, 500, 500, 501]) == [q.OK, q.OK, q.OK, q.STUCK, q.STUCK, q.OK]


def test_stuck_check_off_for_sonar_distance():
    c = q.QualityChecker()
    assert set(flags(c, "distance_cm", [120] * 20)) == {q.OK}


def test_failed_read_is_sensor_failed_and_unknown_quantity_ok():
    c = q.QualityChecker()
    assert c.check("co2_ppm", None) == q.SENSOR_FAILED
    assert c.check("battery_v", 3.7) == q.OK


def test_bad_rule_key_names_the_key():
    with pytest.raises(ValueError, match="maxstep"):
        q.QualityChecker({"co2_ppm": {"maxstep": 3}})


def test_streams_with_their_own_key_do_not_mix():
    c = q.QualityChecker({"temperature_c": {"max_step": 5}})
    assert c.check("temperature_c", 21.0, "room.temperature_c") == q.OK
    assert c.check("temperature_c", 60.0, "pipe.temperature_c") == q.OK  # not a spike of the room's
    assert c.check("temperature_c", 21.5, "room.temperature_c") == q.OK


def test_snapshot_survives_json_and_restores_the_memory():
    import json

    c = q.QualityChecker({"co2_ppm": {"max_step": 300, "stuck_n": 3}})
    flags = [c.check("co2_ppm", v) for v in (600, 600)]
    d = q.QualityChecker({"co2_ppm": {"max_step": 300, "stuck_n": 3}})
    assert d.restore(json.loads(json.dumps(c.snapshot())))
    # after a deep sleep the third identical value is still seen as stuck, a jump as a spike
    assert flags + [d.check("co2_ppm", 600), d.check("co2_ppm", 2000)] == [q.OK, q.OK, q.STUCK, q.SPIKE]
    assert q.QualityChecker().restore({"bad": 1}) is False
