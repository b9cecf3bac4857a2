"""A simulated day per profile: every reading the real drivers take from the simulated
sensors lies within the part's datasheet accuracy of the environment model's truth."""

import pytest

from civicedge.cli import main
from simulators import daysim


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("profile", daysim.PROFILES)
def test_a_day_of_readings_within_datasheet_accuracy(profile, seed):
    samples = daysim.run_day(profile, seed=seed)
    summaries = daysim.summarise(profile, samples)
    expected_n = daysim.DAY_S // daysim.NODES[profile].interval_s
    for s in summaries:
        assert s.within == s.count, "%s %s: %d of %d outside %s (max |err| %.3g)" % (
            profile, s.quantity, s.count - s.within, s.count, s.source, s.max_abs_error)
        # every interval produced a reading (the bin skips only lid-open moments)
        assert s.count >= expected_n * (0.9 if profile == "bin-level" else 1.0)
        # the day was not flat: the environment really moved
        assert s.truth_max > s.truth_min


def test_same_seed_same_readings_different_seed_different():
    a = [(s.quantity, s.reading) for s in daysim.run_day("classroom-co2", seed=3, duration_s=6 * 3600)]
    b = [(s.quantity, s.reading) for s in daysim.run_day("classroom-co2", seed=3, duration_s=6 * 3600)]
    c = [(s.quantity, s.reading) for s in daysim.run_day("classroom-co2", seed=4, duration_s=6 * 3600)]
    assert a == b
    assert a != c


def test_cli_prints_the_table_and_exits_zero(capsys):
    assert main(["sim", "day", "--profile", "legionella-outlet", "--hours", "6"]) == 0
    out = capsys.readouterr().out
    assert "legionella-outlet" in out and "temperature_c" in out
    assert "every reading within its datasheet accuracy" in out


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile must be one of"):
        daysim.run_day("swimming-pool")
