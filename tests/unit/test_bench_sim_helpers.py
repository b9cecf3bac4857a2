"""``scripts/bench sim``'s own measurements around the fleet's run: the machine's idle share
from ``/proc/stat`` ticks, and the in-process baseline repeated until it has run long enough."""

from simulators import bench


def test_idle_share_is_the_idle_ticks_over_all_ticks_between_two_readings():
    assert bench._idle_share((1000, 400), (1200, 430)) == "15 %"
    assert bench._idle_share(None, (1200, 430)) == "n/a"        # no /proc/stat
    assert bench._idle_share((1200, 430), (1200, 430)) == "n/a"  # no time passed


def test_cpu_ticks_reads_this_machines_counters_that_only_go_up():
    first = bench._cpu_ticks()
    sum(i * i for i in range(200_000))  # some CPU between the readings
    second = bench._cpu_ticks()
    assert first is not None and second is not None  # the suite runs on Linux
    assert second[0] >= first[0] and second[1] >= first[1] and first[0] >= first[1]


def test_the_baseline_runs_for_at_least_its_minimum_time():
    import time

    t0 = time.perf_counter()
    rate = bench._sim_baseline(["bin-level"], 1, min_s=0.3)
    assert time.perf_counter() - t0 >= 0.3
    assert rate > 0  # node-days per wall-minute
