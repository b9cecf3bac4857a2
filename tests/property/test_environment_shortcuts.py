"""The environment models' shortcuts give the numbers of the long way: a bin's run started at
its warm-up's last collection, and the outdoor air memoised across models."""

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.environment import ClassroomCO2, StreetBin
from simulators.environment.base import DAY_S

BASES = st.sampled_from([1772409600, 946684800, 1783504800.5])  # 2026-03-02 (a Monday), 2000, 2026-07
OFFSETS = st.lists(st.floats(min_value=0.0, max_value=9.0 * DAY_S, allow_nan=False), min_size=1, max_size=5)


class _WholeWarmupBin(StreetBin):
    """A bin that integrates its whole two-week warm-up, as before the renewal shortcut."""

    def _renewal(self, t0, t1):
        return None


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**40), base=BASES, offsets=OFFSETS,
       missed=st.sampled_from([0.0, 0.5, 1.0]), weekdays=st.sampled_from([(0, 3), (1,), (6,), ()]))
def test_a_bin_started_at_its_last_collection_reads_as_one_started_at_its_warm_up(seed, base, offsets, missed, weekdays):
    kwargs = {"missed_collection_prob": missed, "collection_weekdays": weekdays, "fly_tips_per_week": 2.0}
    short, whole = StreetBin(seed=seed, **kwargs), _WholeWarmupBin(seed=seed, **kwargs)
    for t in sorted(base + o for o in offsets):
        assert short.at(t) == whole.at(t)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**40), base=BASES, offsets=OFFSETS)
def test_classrooms_sharing_their_weather_read_as_each_alone(seed, base, offsets):
    times = sorted(base + o for o in offsets)
    first, second = ClassroomCO2(seed=1, weather_seed=seed), ClassroomCO2(seed=2, weather_seed=seed)
    shared = [(first.at(t), second.at(t)) for t in times]
    alone = []
    for room in (1, 2):
        model = ClassroomCO2(seed=room, weather_seed=seed)
        model.weather._air_memo = {}  # its own memo: every air it asks is its own
        alone.append([model.at(t) for t in times])
    assert shared == list(zip(*alone))
