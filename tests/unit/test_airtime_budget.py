"""The LoRaWAN upstream's airtime budget (gateway/airtime_budget.py): figures from REFERENCE.md
§6.1/§6.2 (ToA of full uplinks, 1 % of band M = 36 s per sliding hour, TTN 30 s and 10
downlinks per 24 h), refusals with the exact wait, and which limit binds."""

import pytest

from gateway.airtime_budget import (
    DUTY_CYCLE, FAIR_USE, NEVER, AirtimeBudget, join_airtime_ms, plan, uplink_airtime_ms)

HOUR_MS = 3600000
DAY_MS = 24 * HOUR_MS


def test_time_on_air_matches_reference_6_1():
    assert uplink_airtime_ms(0, 51) == pytest.approx(2793.5, abs=0.05)
    assert uplink_airtime_ms(3, 115) == pytest.approx(676.9, abs=0.05)
    assert uplink_airtime_ms(5, 222) == pytest.approx(368.9, abs=0.05)
    assert uplink_airtime_ms(5, 11) == pytest.approx(61.7, abs=0.05)
    assert join_airtime_ms(0) == pytest.approx(uplink_airtime_ms(0, 10))  # 23 PHY bytes


@pytest.mark.parametrize("dr, n_app, per_hour, per_ttn_day", [
    (0, 51, 12, 10),     # 2793.5 ms: 36 s / 2.794 s; 30 s / 2.794 s
    (3, 115, 53, 44),    # 676.9 ms
    (5, 222, 97, 81),    # 368.9 ms
    (5, 11, 580, 483),   # 61.7 ms (REFERENCE: ~486 msgs/day; whole ms here)
])
def test_plan_figures(dr, n_app, per_hour, per_ttn_day):
    p = plan(dr, n_app)
    assert (p["per_hour"], p["per_day"]) == (per_hour, per_hour * 24)
    assert plan(dr, n_app, ttn_fair_use=True)["per_day"] == per_ttn_day
    assert p["min_interval_s"] == pytest.approx(p["toa_ms"] / 10, rel=1e-9)  # 100 x ToA


def test_plan_defaults_to_the_data_rates_payload_limit():
    assert [plan(dr)["n_app"] for dr in range(7)] == [51, 51, 51, 115, 222, 222, 222]


def test_duty_cycle_allows_twelve_full_sf12_uplinks_an_hour_then_says_how_long():
    b = AirtimeBudget()
    toa = uplink_airtime_ms(0, 51)
    now = 0
    for _ in range(12):
        assert b.wait_ms(toa, now) == (0, "")
        b.record_uplink(toa, now)
        now += 3000
    wait, reason = b.wait_ms(toa, now)
    assert reason == DUTY_CYCLE
    # The first frame (0 .. 2794 ms) leaves the hour that ends when the new one would end
    # once that hour starts after 2794 ms: the new frame may start at 1 h exactly.
    assert now + wait == HOUR_MS
    assert b.wait_ms(toa, now + wait) == (0, "")
    assert b.wait_ms(toa, now + wait - 1)[0] == 1
    assert b.usage(now)["duty_used_ms"] == 12 * 2794
    assert b.usage(now)["duty_budget_ms"] == 36000
    assert "fair_used_ms" not in b.usage(now)


def test_fair_use_binds_before_the_duty_cycle_over_a_day():
    b = AirtimeBudget(ttn_fair_use=True)
    toa = uplink_airtime_ms(0, 51)
    now = 0
    for _ in range(10):
        assert b.wait_ms(toa, now) == (0, "")
        b.record_uplink(toa, now)
        now += 30 * 60000  # well within the duty cycle
    wait, reason = b.wait_ms(toa, now)
    assert reason == FAIR_USE and wait > HOUR_MS  # the day's 30 s are spent (10 x 2794 ms)
    # The first uplink's 2794 ms leave the 24 h window that ends when the new one would end.
    assert b.wait_ms(toa, now + wait) == (0, "")
    assert b.usage(now)["fair_used_ms"] == 27940 and b.usage(now)["fair_budget_ms"] == 30000


def test_short_uplinks_fit_what_is_left_of_the_fair_use_day():
    b = AirtimeBudget(ttn_fair_use=True)
    toa = uplink_airtime_ms(0, 51)
    for i in range(10):
        b.record_uplink(toa, i * HOUR_MS)
    left = 30000 - 27940
    assert b.wait_ms(left, 11 * HOUR_MS) == (0, "")
    assert b.wait_ms(left + 1, 11 * HOUR_MS)[1] == FAIR_USE


def test_downlinks_and_acks_are_limited_to_ten_a_day_under_fair_use():
    b = AirtimeBudget(ttn_fair_use=True)
    for i in range(10):
        assert b.can_downlink(i * 1000)
        b.record_downlink(i * 1000)
    assert not b.can_downlink(10000)
    assert b.can_downlink(DAY_MS + 1)  # the first one left the window
    assert b.usage(10000)["downlinks_used"] == 10
    private = AirtimeBudget()
    for i in range(50):
        private.record_downlink(i)
    assert private.can_downlink(60)


def test_a_frame_longer_than_a_whole_budget_can_never_go():
    assert AirtimeBudget().wait_ms(36001, 0) == (None, NEVER)
    assert AirtimeBudget(ttn_fair_use=True).wait_ms(30001, 0) == (None, NEVER)
    assert AirtimeBudget().wait_ms(36000, 0) == (0, "")


def test_recording_late_only_over_counts():
    # The forwarder records a frame as ending when the modem's reply came (after the real
    # end): the budget then waits a little longer than needed, never less.
    early, late = AirtimeBudget(), AirtimeBudget()
    toa = uplink_airtime_ms(0, 51)
    for i in range(12):
        early.record_uplink(toa, i * 2794)
        late.record_uplink(toa, i * 2794 + 2500)
    assert late.wait_ms(toa, 40000)[0] > early.wait_ms(toa, 40000)[0] > 0


@pytest.mark.parametrize("toa, now", [(-1, 0), (float("nan"), 0), (10, 1.5), (10, None), (True, 0)])
def test_bad_arguments_are_value_errors(toa, now):
    with pytest.raises(ValueError):
        AirtimeBudget().wait_ms(toa, now)


def test_bad_band_or_dr_is_a_value_error():
    with pytest.raises(ValueError, match="band"):
        AirtimeBudget(band="Z")
    with pytest.raises(ValueError, match="dr"):
        plan(7)
    with pytest.raises(ValueError, match="dr"):
        join_airtime_ms(True)


def test_the_state_restored_on_a_new_clock_counts_the_downtime_as_none():
    b = AirtimeBudget(ttn_fair_use=True)
    toa = uplink_airtime_ms(0, 51)
    for i in range(12):
        b.record_uplink(toa, 10 ** 7 + i * 3000)
    b.record_downlink(10 ** 7 + 5000)
    saved_at = 10 ** 7 + 40000
    state = b.state(saved_at)
    assert state["v"] == 1 and len(state["duty"]) == 12 and state["duty"][0][0] < 0
    # the new process's clock starts at 0: the budget continues where it stopped
    again = AirtimeBudget(ttn_fair_use=True)
    again.restore(state, 0)
    assert again.usage(0) == b.usage(saved_at)
    assert again.wait_ms(toa, 0) == b.wait_ms(toa, saved_at)  # wait, as before the restart
    assert again.wait_ms(toa, 0)[0] > 0
    assert not AirtimeBudget().wait_ms(toa, 0)[0]  # a forgetful one would send at once


def test_a_reserved_frame_is_in_the_state_ending_as_late_as_it_can():
    b = AirtimeBudget()
    toa = uplink_airtime_ms(0, 51)
    state = b.state(1000, reserve=(toa, 1000, 1000 + 2794 + 30000))
    assert state["duty"] == [[2794 + 30000, 2794]] and b.usage(1000)["duty_used_ms"] == 0
    restored = AirtimeBudget()
    restored.restore(state, 0)
    assert restored.usage(0)["duty_used_ms"] == 2794
    # counted until an hour after its latest end: never shorter than the real frame's
    assert restored.usage(HOUR_MS + 2794 + 30000 - 1)["duty_used_ms"] == 2794


@pytest.mark.parametrize("state, what", [
    (None, "version"), ({"v": 2}, "version"), ({"v": 1, "band": "L"}, "band"),
    ({"v": 1, "band": "M", "duty": [[1, 2, 3]]}, "duty"),
    ({"v": 1, "band": "M", "duty": [[1, 99999]]}, "duty"),
    ({"v": 1, "band": "M", "duty": "x"}, "duty")])
def test_a_state_that_is_not_one_is_refused_and_changes_nothing(state, what):
    b = AirtimeBudget()
    b.record_uplink(1000, 0)
    with pytest.raises(ValueError, match=what):
        b.restore(state, 0)
    assert b.usage(0)["duty_used_ms"] == 1000


def test_restoring_more_entries_than_kept_merges_the_oldest():
    state = {"v": 1, "band": "M", "duty": [[-100 * i, 10] for i in range(40)]}
    b = AirtimeBudget(max_entries=32)
    b.restore(state, 0)
    assert b.usage(0)["duty_used_ms"] == 400  # nothing forgotten
