"""``PipeOutlet``: water temperature at a pipe-clamp sensor on a hot or cold outlet.

Theory of operation
-------------------
Two states: the water in the pipe at the clamp (``water_c``) and the clamp sensor itself
(``temperature_c``). While the outlet runs, fresh water purges the leg and the water relaxes
to the supply temperature with ``purge_tau_s``; while it stands, the dead leg relaxes to the
room (``ambient_c``) with ``stagnation_tau_s`` -- or, for a leg on a secondary circulation
loop (``circulated=True``), stays near the supply. The clamp follows the water first-order
(``clamp_tau_s`` on flowing water, 3x slower on still water) and reads a little below it,
``clamp_loss`` of the way toward the room (HSG274 notes a clamp reads low and lags on flow
start). Each piece of constant flow is solved exactly (``relax_cascade``), so flow starts
and stops at their true second, not on the 60 s grid.

Hot supply: the calorifier at ``supply_c`` (60 deg C) cycling +-1 deg C over 90 min, a 2 deg C
dip in the weekday morning peak, less ``distribution_c`` (3 deg C) on the way. Cold supply:
mains water, seasonal (``mains_mean_c`` +- ``mains_amp_c``, coldest in late February) plus
``distribution_c`` (+1 deg C picked up in the building). Draw-offs are a Poisson process per
hour slot shaped by building hours (none at night, peaks at arrival, lunch and late
afternoon; ``weekend_factor`` at weekends). A weekly flush runs ``flush_duration_s`` from
``flush_weekday`` at ``flush_hour`` (+-15 min). Physical faults (``fault=``, from
``fault_from_s`` on): "weak_supply" (hot: calorifier at ~49 deg C, so the outlet never
reaches 50), "little_used" (2 % of the normal draw-offs: the leg sits in 20-45 deg C for
days between flushes), "warm_cold_supply" (cold: supply 9 deg C warmer, e.g. a tank in a
warm roof space). Times are UK local, UTC, no DST.
"""

import math

from simulators.environment.base import (
    DAY_S,
    HOUR_S,
    MONDAY_EPOCH_S,
    WEEK_S,
    GridModel,
    Memo,
    SmoothNoise,
    check_number,
    duration_where_s,
    hour_of_day,
    intervals_where,
    lognormal,
    parse_weekdays,
    poisson_times,
    relax_cascade,
    season_cos,
    slot_rng,
    uniform,
    weekday,
)

# Share of a weekday's draw-offs in each hour (building hours: none at night).
_HOUR_WEIGHTS = (0, 0, 0, 0, 0, 0, 0.2, 0.8, 1.5, 1.0, 0.9, 1.0, 1.6, 1.4, 1.0, 0.9, 1.2, 1.0, 0.6,
                 0.3, 0.1, 0.05, 0, 0)
_HOUR_SHARE = tuple(w / sum(_HOUR_WEIGHTS) for w in _HOUR_WEIGHTS)
FAULTS = ("weak_supply", "little_used", "warm_cold_supply")
_CIRCULATION_TAU_S = 600.0
_HSE_LIMIT_C = {"hot": 50.0, "cold": 20.0}  # REFERENCE.md 2.5
_HSE_SETTLE_S = {"hot": 60.0, "cold": 120.0}  # ... reached within 1 min / 2 min of running


class PipeOutlet(GridModel):
    """Water temperature at an outlet's pipe clamp. Keys of ``at(t)``: ``temperature_c`` (the
    clamp), ``water_c``, ``flowing``, ``ambient_c``, ``supply_c`` (water arriving when
    running), ``fault_active``.

    Raises ``ValueError`` naming the argument for a bad parameter."""

    step_s = 60
    warmup_s = DAY_S

    def __init__(self, seed=0, kind="hot", supply_c=60.0, distribution_c=None, mains_mean_c=12.0,
                 mains_amp_c=3.5, ambient_c=21.5, draws_per_day=12.0, weekend_factor=0.15,
                 flush_weekday=0, flush_hour=7.0, flush_duration_s=300.0, stagnation_tau_s=3600.0,
                 purge_tau_s=8.0, clamp_tau_s=15.0, clamp_loss=0.04, circulated=False, fault=None,
                 fault_from_s=None):
        GridModel.__init__(self, seed)
        if kind not in ("hot", "cold"):
            raise ValueError("kind must be 'hot' or 'cold', got %r" % (kind,))
        if fault is not None and fault not in FAULTS:
            raise ValueError("fault must be None or one of %s, got %r" % (", ".join(FAULTS), fault))
        self.kind = kind
        self.supply_c = check_number("supply_c", supply_c, 0.0, 100.0)
        if distribution_c is None:
            distribution_c = -3.0 if kind == "hot" else 1.0
        self.distribution_c = check_number("distribution_c", distribution_c, -30.0, 30.0)
        self.mains_mean_c = check_number("mains_mean_c", mains_mean_c, 0.0, 40.0)
        self.mains_amp_c = check_number("mains_amp_c", mains_amp_c, 0.0, 20.0)
        self.ambient_mean_c = check_number("ambient_c", ambient_c, -10.0, 45.0)
        self.draws_per_day = check_number("draws_per_day", draws_per_day, 0.0, 10000.0)
        self.weekend_factor = check_number("weekend_factor", weekend_factor, 0.0, 10.0)
        if flush_weekday is None:
            self._flush_day = None
        else:
            self._flush_day = min(parse_weekdays([flush_weekday], "flush_weekday"))
        self.flush_hour = check_number("flush_hour", flush_hour, 0.0, 24.0)
        self.flush_duration_s = check_number("flush_duration_s", flush_duration_s, 0.0, 3.0 * HOUR_S)
        self.stagnation_tau_s = check_number("stagnation_tau_s", stagnation_tau_s, 0.0, low_open=True)
        self.purge_tau_s = check_number("purge_tau_s", purge_tau_s, 0.0, low_open=True)
        self.clamp_tau_s = check_number("clamp_tau_s", clamp_tau_s, 0.0, low_open=True)
        self.clamp_loss = check_number("clamp_loss", clamp_loss, 0.0, 0.5)
        self.circulated = bool(circulated)
        self.fault = fault
        self.fault_from_s = None if fault_from_s is None else check_number("fault_from_s", fault_from_s)
        self._room = SmoothNoise(seed, "pipe.room", 6 * HOUR_S)
        self._slot_flows = Memo(self._make_slot_flows)
        self._draws = Memo(self._make_draws)
        self._flushes = Memo(self._make_flushes)

    # -- inputs ---------------------------------------------------------------------------
    def fault_active(self, t):
        return self.fault is not None and (self.fault_from_s is None or t >= self.fault_from_s)

    def ambient_c(self, t):
        """Room air around the pipe: warmer in the working day and in summer."""
        h = hour_of_day(t)
        working = 1.0 if weekday(t) < 5 and 7.0 <= h < 18.0 else 0.0
        return self.ambient_mean_c + 1.0 * working - 1.0 * season_cos(t) + 0.4 * self._room(t)

    def supply_at_c(self, t):
        """Temperature of the water that arrives at the outlet when it runs."""
        if self.kind == "hot":
            source = 49.0 if self.fault == "weak_supply" and self.fault_active(t) else self.supply_c
            h = hour_of_day(t)
            peak = max(0.0, 1.0 - abs(h - 8.0)) if weekday(t) < 5 else 0.0
            source += 1.0 * math.sin(2.0 * math.pi * t / 5400.0) - 2.0 * peak
        else:
            source = self.mains_mean_c - self.mains_amp_c * season_cos(t, lag_days=40.0)
            if self.fault == "warm_cold_supply" and self.fault_active(t):
                source += 9.0
        return source + self.distribution_c

    # -- draw-off events (per hour slot), flushes (per week) ------------------------------
    def _make_draws(self, slot):
        t0 = slot * HOUR_S
        rate = self.draws_per_day * _HOUR_SHARE[slot % 24] / HOUR_S
        if weekday(t0) >= 5:
            rate *= self.weekend_factor
        if self.fault == "little_used" and self.fault_active(t0):
            rate *= 0.02
        rng = slot_rng(self.seed, "pipe.draw", slot)
        out = []
        for start in poisson_times(rng, t0, t0 + HOUR_S, rate):
            if rng.random() < 0.05:  # cleaning, filling a bucket
                duration = uniform(rng, 120.0, 480.0)
            else:  # hand washing, a cup
                duration = lognormal(rng, 20.0, 0.7, 3.0, 180.0)
            out.append((start, start + duration))
        return tuple(out)

    def _make_flushes(self, week):
        if self._flush_day is None or self.flush_duration_s <= 0.0:
            return ()
        rng = slot_rng(self.seed, "pipe.flush", week)
        start = (MONDAY_EPOCH_S + week * WEEK_S + self._flush_day * DAY_S + self.flush_hour * HOUR_S
                 + uniform(rng, -900.0, 900.0))
        return ((start, start + self.flush_duration_s),)

    def _make_slot_flows(self, slot):
        """Merged flow intervals clipped to hour slot ``slot``."""
        t0, t1 = slot * HOUR_S, (slot + 1) * HOUR_S
        week = (t0 - MONDAY_EPOCH_S) // WEEK_S
        spans = list(self._draws(slot)) + list(self._draws(slot - 1))
        spans += list(self._flushes(week)) + list(self._flushes(week - 1))
        return tuple(_merge((max(a, t0), min(b, t1)) for a, b in spans if a < t1 and b > t0))

    def flow_intervals(self, start_s, end_s):
        """Merged [(start_s, end_s)] of running water overlapping [start_s, end_s)."""
        spans = []
        for slot in range(int(start_s // HOUR_S), int(math.ceil(end_s / HOUR_S))):
            spans.extend(self._slot_flows(slot))
        return [(a, b) for a, b in _merge(spans, join=True) if b > start_s and a < end_s]

    def flush_times(self, start_s, end_s):
        """Scheduled weekly flushes [(start_s, end_s)] starting in [start_s, end_s)."""
        first = int((start_s - MONDAY_EPOCH_S) // WEEK_S) - 1
        last = int((end_s - MONDAY_EPOCH_S) // WEEK_S)
        return [f for w in range(first, last + 1) for f in self._flushes(w) if start_s <= f[0] < end_s]

    def _flowing(self, t):
        return any(a <= t < b for a, b in self._slot_flows(int(t // HOUR_S)))

    # -- integration ----------------------------------------------------------------------
    def _initial_state(self, t0):
        start = self.supply_at_c(t0) if self.circulated else self.ambient_c(t0)
        return [start, start]

    def _advance(self, state, t0, t1):
        cur = t0
        for a, b in self._slot_flows(int(t0 // HOUR_S)):
            if b <= cur:
                continue
            if a >= t1:
                break
            if a > cur:
                self._piece(state, cur, a, False)
                cur = a
            end = min(b, t1)
            self._piece(state, cur, end, True)
            cur = end
        if cur < t1:
            self._piece(state, cur, t1, False)

    def _piece(self, state, t0, t1, flowing):
        mid = 0.5 * (t0 + t1)
        room = self.ambient_c(mid)
        if flowing:
            target, tau_w, tau_s = self.supply_at_c(mid), self.purge_tau_s, self.clamp_tau_s
        elif self.circulated:
            target, tau_w, tau_s = self.supply_at_c(mid), _CIRCULATION_TAU_S, 3.0 * self.clamp_tau_s
        else:
            target, tau_w, tau_s = room, self.stagnation_tau_s, 3.0 * self.clamp_tau_s
        loss = self.clamp_loss
        state[0], state[1] = relax_cascade(state[0], state[1], target, loss * room, 1.0 - loss, t1 - t0, tau_w, tau_s)

    def _observe(self, state, t):
        return {
            "temperature_c": state[1],
            "water_c": state[0],
            "flowing": self._flowing(t),
            "ambient_c": self.ambient_c(t),
            "supply_c": self.supply_at_c(t),
            "fault_active": self.fault_active(t),
        }

    # -- alarm ground truth ---------------------------------------------------------------
    def out_of_range_intervals(self, start_s, end_s, sample_s=60.0, min_duration_s=0.0, threshold_c=None,
                               key="temperature_c", flowing_only=False, settle_s=None):
        """[(start_s, end_s)] where a hot outlet is below 50 deg C, or a cold one at or above
        20 deg C (``threshold_c`` overrides). With ``flowing_only``, only while running and at
        least ``settle_s`` (HSE: 60 s hot, 120 s cold) after the water started."""
        limit = _HSE_LIMIT_C[self.kind] if threshold_c is None else threshold_c
        times, values = self.sample(start_s, end_s, sample_s, key)
        if self.kind == "hot":
            flags = [v < limit for v in values]
        else:
            flags = [v >= limit for v in values]
        if flowing_only:
            settle = _HSE_SETTLE_S[self.kind] if settle_s is None else settle_s
            flows = self.flow_intervals(start_s - DAY_S, end_s)
            flags = [f and any(a + settle <= t < b for a, b in flows) for t, f in zip(times, flags)]
        return intervals_where(times, flags, sample_s, min_duration_s)

    def growth_band_hours(self, start_s, end_s, low_c=20.0, high_c=45.0, sample_s=60.0, key="temperature_c"):
        """Hours in [start_s, end_s) spent in the legionella growth band [low_c, high_c]."""
        _, values = self.sample(start_s, end_s, sample_s, key)
        return duration_where_s([low_c <= v <= high_c for v in values], sample_s) / HOUR_S


def _merge(spans, join=False):
    """Sorted, overlapping spans merged; with ``join`` touching spans merge too."""
    out = []
    for a, b in sorted(spans):
        if b <= a:
            continue
        if out and (a < out[-1][1] or (join and a == out[-1][1])):
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
