"""``StreetBin``: the fill of a street litter bin and what an ultrasonic sensor in its lid sees.

Theory of operation
-------------------
State: refuse that has settled (litres), loose refuse still settling (litres; loses
``settle_fraction`` of its volume with ``settle_tau_s``), the height of a bag lying on top
under the sensor (cm; slumps with a 30 min time constant) and what overflowed (litres).
Events come from seeded per-slot RNGs and are applied at their exact time:

- deposits: a Poisson process per hour slot shaped by high-street footfall (commute, a
  lunchtime peak, evening; Friday x1.15, Saturday x1.4, Sunday x1.1): mostly small items
  (median 0.4 L), sometimes a bag (4-12 L) that sits 5-20 cm proud for a while;
- the lid opens for a few seconds at each deposit, and now and then is left open for 5-90
  min: while it is open the sensor (in the lid) sees something close (15-40 cm) instead of
  the refuse;
- collections on ``collection_weekdays`` at ``collection_hour`` (+-30 min; missed with
  ``missed_collection_prob``) empty the bin to a small residue -- a renewal: the state after a
  collection does not depend on the past, which is why a two-week warm-up makes any start
  date exact (and why a run starts at the warm-up's last collection: ``_renewal``);
- fly-tipping (``fly_tips_per_week`` at random times, and/or one at ``fly_tip_at_s``): a
  burst of 4-8 bags over 5-20 min adding 50-90 % of the capacity -- a fast rise.

``fill_ratio`` is the truth (volume / capacity, 0..1). ``distance_cm`` is the geometric
distance from the sensor to what it faces: ``empty_distance_cm - fill_ratio * (empty - full)``
less any bag on top, or the lid reading while the lid is open. The sensor model, not this
one, applies the speed of sound and its range limits. Times are UK local, UTC, no DST.
"""

import math

from simulators.environment.base import (
    DAY_S,
    HOUR_S,
    MONDAY_EPOCH_S,
    WEEK_S,
    GridModel,
    Memo,
    check_number,
    intervals_where,
    lognormal,
    parse_weekdays,
    poisson_times,
    rise_events,
    slot_rng,
    uniform,
    weekday,
)
from simulators.environment.weather import OutdoorWeather

_FOOTFALL = (0.3, 0.2, 0.1, 0.05, 0.05, 0.1, 0.4, 1.0, 1.3, 1.0, 1.1, 1.5, 2.2, 2.0, 1.5, 1.3, 1.4,
             1.6, 1.5, 1.2, 1.0, 0.9, 0.7, 0.5)
_FOOTFALL_SHARE = tuple(f / sum(_FOOTFALL) for f in _FOOTFALL)
_DAY_FACTOR = (1.0, 1.0, 1.0, 1.0, 1.15, 1.4, 1.1)
_BUMP_TAU_S = 1800.0
_LID_SLOTS_BACK = 2  # a lid left open (<= 90 min) started at most two hour slots ago
_DEPOSIT, _COLLECT = 0, 1


class StreetBin(GridModel):
    """A street bin. Keys of ``at(t)``: ``distance_cm``, ``fill_ratio``, ``fill_l``,
    ``overflow_l``, ``surface_cm`` (to the refuse, lid or not), ``bag_bump_cm``, ``lid_open``,
    ``temperature_c`` (air).

    Raises ``ValueError`` naming the argument for a bad parameter."""

    step_s = 300
    warmup_s = 14 * DAY_S

    def __init__(self, seed=0, empty_distance_cm=100.0, full_distance_cm=30.0, capacity_l=120.0,
                 deposits_per_day=35.0, bag_fraction=0.06, collection_weekdays=(0, 3),
                 collection_hour=6.5, missed_collection_prob=0.0, lid=True, lid_open_s=4.0,
                 lid_left_open_per_day=0.15, settle_fraction=0.2, settle_tau_s=6 * HOUR_S,
                 fly_tips_per_week=0.0, fly_tip_at_s=None, weather_seed=None):
        GridModel.__init__(self, seed)
        self.empty_distance_cm = check_number("empty_distance_cm", empty_distance_cm, 0.0, low_open=True)
        self.full_distance_cm = check_number("full_distance_cm", full_distance_cm, 25.0)
        if self.empty_distance_cm <= self.full_distance_cm:
            raise ValueError("empty_distance_cm (%r) must be greater than full_distance_cm (%r)"
                             % (empty_distance_cm, full_distance_cm))
        self.capacity_l = check_number("capacity_l", capacity_l, 0.0, low_open=True)
        self.deposits_per_day = check_number("deposits_per_day", deposits_per_day, 0.0, 100000.0)
        self.bag_fraction = check_number("bag_fraction", bag_fraction, 0.0, 1.0)
        self.collection_weekdays = parse_weekdays(collection_weekdays, "collection_weekdays")
        self.collection_hour = check_number("collection_hour", collection_hour, 0.5, 23.5)
        self.missed_collection_prob = check_number("missed_collection_prob", missed_collection_prob, 0.0, 1.0)
        self.lid = bool(lid)
        self.lid_open_s = check_number("lid_open_s", lid_open_s, 0.0, 600.0)
        self.lid_left_open_per_day = check_number("lid_left_open_per_day", lid_left_open_per_day, 0.0, 100.0)
        self.settle_fraction = check_number("settle_fraction", settle_fraction, 0.0, 0.9)
        self.settle_tau_s = check_number("settle_tau_s", settle_tau_s, 0.0, low_open=True)
        self.fly_tips_per_week = check_number("fly_tips_per_week", fly_tips_per_week, 0.0, 100.0)
        self.fly_tip_at_s = None if fly_tip_at_s is None else check_number("fly_tip_at_s", fly_tip_at_s)
        self.weather = OutdoorWeather(seed if weather_seed is None else weather_seed)
        self._collections = Memo(self._make_collection)
        self._fly_tips = Memo(self._make_fly_tips)
        self._slots = Memo(self._make_slot)

    # -- events ---------------------------------------------------------------------------
    def _make_collection(self, day):
        """(time_s, residue_l) of the day's collection, or None."""
        if (day + 3) % 7 not in self.collection_weekdays:
            return None
        rng = slot_rng(self.seed, "bin.collect", day)
        if rng.random() < self.missed_collection_prob:
            return None
        return (day * DAY_S + self.collection_hour * HOUR_S + uniform(rng, -1800.0, 1800.0),
                uniform(rng, 0.0, 1.5))

    def _burst(self, rng, start):
        """A fly-tip: [(time_s, litres, bump_cm)] of 4-8 bags over 5-20 min."""
        n = 4 + int(rng.random() * 5)
        total = uniform(rng, 0.5, 0.9) * self.capacity_l
        span = uniform(rng, 300.0, 1200.0)
        return [(start + span * i / (n - 1), total / n, uniform(rng, 10.0, 25.0)) for i in range(n)]

    def _make_fly_tips(self, week):
        """The week's fly-tips: [(start_s, [(time_s, litres, bump_cm)])]."""
        w0 = MONDAY_EPOCH_S + week * WEEK_S
        rng = slot_rng(self.seed, "bin.flytip", week)
        tips = [(s, self._burst(rng, s)) for s in poisson_times(rng, w0, w0 + WEEK_S, self.fly_tips_per_week / WEEK_S)]
        if self.fly_tip_at_s is not None and w0 <= self.fly_tip_at_s < w0 + WEEK_S:
            tips.append((self.fly_tip_at_s, self._burst(slot_rng(self.seed, "bin.flytip.at", week), self.fly_tip_at_s)))
        return sorted(tips)

    def _make_slot(self, slot):
        """Hour slot ``slot``: (events [(time_s, kind, a, b)] sorted, lid spans [(start, end, cm)])."""
        t0, t1 = slot * HOUR_S, (slot + 1) * HOUR_S
        rng = slot_rng(self.seed, "bin.slot", slot)
        rate = self.deposits_per_day * _FOOTFALL_SHARE[slot % 24] * _DAY_FACTOR[weekday(t0)] / HOUR_S
        events, lids = [], []
        for t in poisson_times(rng, t0, t1, rate):
            if rng.random() < self.bag_fraction:
                litres, bump = uniform(rng, 4.0, 12.0), uniform(rng, 5.0, 20.0)
            else:
                litres, bump = lognormal(rng, 0.4, 0.8, 0.05, 3.0), 0.0
            events.append((t, _DEPOSIT, litres, bump))
            open_s, reading = self.lid_open_s * uniform(rng, 0.5, 2.0), uniform(rng, 15.0, 40.0)
            if self.lid and open_s > 0.0:
                lids.append((t, t + open_s, reading))
        if self.lid:
            rate = self.lid_left_open_per_day * _FOOTFALL_SHARE[slot % 24] / HOUR_S
            for t in poisson_times(rng, t0, t1, rate):
                lids.append((t, t + uniform(rng, 300.0, 5400.0), uniform(rng, 15.0, 40.0)))
        collection = self._collections(int(t0 // DAY_S))
        if collection is not None and t0 <= collection[0] < t1:
            events.append((collection[0], _COLLECT, collection[1], 0.0))
        week = (t0 - MONDAY_EPOCH_S) // WEEK_S
        for _, dumps in self._fly_tips(week) + self._fly_tips(week - 1):
            events.extend((t, _DEPOSIT, litres, bump) for t, litres, bump in dumps if t0 <= t < t1)
        events.sort()
        return tuple(events), tuple(lids)

    def collection_times(self, start_s, end_s):
        """Times of the collections made in [start_s, end_s)."""
        days = range(int(start_s // DAY_S), int(math.ceil(end_s / DAY_S)) + 1)
        return [c[0] for c in (self._collections(d) for d in days) if c is not None and start_s <= c[0] < end_s]

    def fly_tip_times(self, start_s, end_s):
        """Start times of fly-tips in [start_s, end_s)."""
        first = int((start_s - MONDAY_EPOCH_S) // WEEK_S) - 1
        last = int((end_s - MONDAY_EPOCH_S) // WEEK_S)
        return [s for w in range(first, last + 1) for s, _ in self._fly_tips(w) if start_s <= s < end_s]

    def lid_open_intervals(self, start_s, end_s):
        """[(start_s, end_s, reading_cm)] of lid openings starting in [start_s, end_s)."""
        slots = range(int(start_s // HOUR_S), int(math.ceil(end_s / HOUR_S)))
        return sorted(lid for s in slots for lid in self._slots(s)[1] if start_s <= lid[0] < end_s)

    def _lid_reading(self, t):
        """The lid reading (cm) if the lid is open at ``t``, else None."""
        slot = int(t // HOUR_S)
        for s in range(slot - _LID_SLOTS_BACK, slot + 1):
            for a, b, cm in self._slots(s)[1]:
                if a <= t < b:
                    return cm
        return None

    # -- integration ----------------------------------------------------------------------
    def _initial_state(self, t0):
        return [0.0, 0.0, 0.0, 0.0]  # settled_l, loose_l, bump_cm, overflow_l

    def _renewal(self, t0, t1):
        """The step of the last collection in [t0, t1): it empties the bin, setting the whole state."""
        for day in range(int(t1 // DAY_S), int(t0 // DAY_S) - 1, -1):
            collection = self._collections(day)
            if collection is not None and t0 <= collection[0] < t1:
                return int(collection[0] // self.step_s) * self.step_s
        return None

    def _advance(self, state, t0, t1):
        cur = t0
        for t, kind, a, b in self._slots(int(t0 // HOUR_S))[0]:
            if t < t0:
                continue
            if t >= t1:
                break
            self._settle(state, t - cur)
            cur = t
            if kind == _COLLECT:
                state[0], state[1], state[2], state[3] = a, 0.0, 0.0, 0.0
            else:
                state[1] += a
                state[2] += b
                excess = state[0] + state[1] - self.capacity_l
                if excess > 0.0:  # it overflows: what does not fit lies beside the bin
                    state[3] += excess
                    state[1] = max(0.0, state[1] - excess)
                    state[0] = self.capacity_l - state[1]
        self._settle(state, t1 - cur)

    def _settle(self, state, dt):
        if dt <= 0.0:
            return
        loose = state[1] * math.exp(-dt / self.settle_tau_s)
        state[0] += (1.0 - self.settle_fraction) * (state[1] - loose)
        state[1] = loose
        state[2] *= math.exp(-dt / _BUMP_TAU_S)

    def _observe(self, state, t):
        fill_l = state[0] + state[1]
        ratio = max(0.0, min(1.0, fill_l / self.capacity_l))
        span = self.empty_distance_cm - self.full_distance_cm
        surface = max(5.0, self.empty_distance_cm - ratio * span - state[2])
        lid_cm = self._lid_reading(t)
        return {
            "distance_cm": surface if lid_cm is None else lid_cm,
            "fill_ratio": ratio,
            "fill_l": fill_l,
            "overflow_l": state[3],
            "surface_cm": surface,
            "bag_bump_cm": state[2],
            "lid_open": lid_cm is not None,
            "temperature_c": self.weather.temperature_c(t),
        }

    # -- alarm ground truth ---------------------------------------------------------------
    def full_intervals(self, start_s, end_s, threshold=0.8, sample_s=300.0):
        """[(start_s, end_s)] where the true fill is >= ``threshold`` (0..1)."""
        times, fill = self.sample(start_s, end_s, sample_s, "fill_ratio")
        return intervals_where(times, [f >= threshold for f in fill], sample_s)

    def fast_rises(self, start_s, end_s, rise_ratio=0.3, window_s=HOUR_S, sample_s=300.0):
        """Times where the true fill rose by >= ``rise_ratio`` within ``window_s``."""
        times, fill = self.sample(start_s, end_s, sample_s, "fill_ratio")
        return rise_events(times, fill, rise_ratio, window_s)
