"""Shared machinery of the environment models: local time, seeded randomness, the fixed-step
integrator with its cache, and pure functions over sampled series (alarm ground truth).

Theory of operation
-------------------
Every model is a pure function of ``(seed, parameters, wall_s)``: ``at(t)`` gives the same
dict whatever was queried before, and however often.

*Time.* ``wall_s`` is Unix seconds, read as UK local time with no daylight saving (so a
school day in summer is an hour "early" against BST; the models never see the difference).
1970-01-05 00:00 was a Monday, so weeks are aligned on Monday midnight.

*Randomness.* A random event in a model (a draw-off, a deposit, a class's absences) is drawn
from an RNG seeded by ``(seed, stream, slot index)`` through BLAKE2b -- never Python's
salted ``hash()`` -- so slot *k*'s events exist before anyone asks and do not depend on other
slots. Only ``Random.random()`` is used (Python guarantees its sequence across versions for
an int seed); other variates are derived here from it. Smooth random weather signals are
Gaussian values at fixed knots, interpolated (``SmoothNoise``).

*Integration.* A model with memory (CO2 in a room, water in a pipe, refuse in a bin) steps
its state on a fixed grid of ``step_s`` from a fixed origin. So that any start date works
without integrating from 1970, time is cut into blocks (a week, from Monday 00:00): the value
at any time in block *k* comes from a *run* that starts ``warmup_s`` before the block from a
deterministic initial state. Each model's warm-up is long compared with its memory (or passes
a renewal, e.g. a bin collection), so a run has forgotten its start by the time its block
begins and the seam between blocks is invisible. A query between grid points advances a copy
of the grid state by the remainder. A run keeps its *trail*, every grid state from its block's
start to the furthest point integrated (doubles in an ``array``): a query at or before that
point reads its grid state there instead of integrating again, and a later one integrates on
from the furthest point -- the same numbers as integrating from the start every time.
"""

import hashlib
import math
import random
from array import array

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86400
WEEK_S = 7 * DAY_S
YEAR_S = 365.2425 * DAY_S
MONDAY_EPOCH_S = 4 * DAY_S  # 1970-01-05 00:00 UTC, a Monday
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# -- local time ---------------------------------------------------------------------------
def day_index(wall_s):
    """Days since 1970-01-01 (local = UTC, no DST)."""
    return int(wall_s // DAY_S)


def weekday(wall_s):
    """0 = Monday ... 6 = Sunday."""
    return (int(wall_s // DAY_S) + 3) % 7


def hour_of_day(wall_s):
    """Hours since local midnight, 0 <= h < 24."""
    return (wall_s % DAY_S) / HOUR_S


def season_cos(wall_s, lag_days=0.0):
    """+1 in mid-January (plus ``lag_days``), -1 half a year later: winter-ness, smooth."""
    return math.cos(2.0 * math.pi * (wall_s - (14.0 + lag_days) * DAY_S) / YEAR_S)


def parse_hhmm(text, name):
    """``"08:45"`` -> seconds after midnight; ``ValueError`` naming ``name`` otherwise."""
    try:
        hh, mm = str(text).split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError("%s: expected 'HH:MM', got %r" % (name, text)) from None
    if not (0 <= h <= 24 and 0 <= m < 60) or h * 60 + m > 24 * 60:
        raise ValueError("%s: time out of range: %r" % (name, text))
    return h * HOUR_S + m * MINUTE_S


def parse_date(text, name):
    """``"2026-02-16"`` -> day index (see ``day_index``); ``ValueError`` naming ``name``."""
    import datetime

    try:
        d = datetime.date.fromisoformat(str(text))
    except ValueError:
        raise ValueError("%s: expected 'YYYY-MM-DD', got %r" % (name, text)) from None
    return (d - datetime.date(1970, 1, 1)).days


def parse_weekdays(values, name):
    """A list of weekdays (0-6 or 'mon'...'sun') -> a frozenset of ints 0-6."""
    out = set()
    for v in values:
        if isinstance(v, str) and v[:3].lower() in WEEKDAYS:
            out.add(WEEKDAYS.index(v[:3].lower()))
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 6:
            out.add(v)
        else:
            raise ValueError("%s: weekday must be 0-6 (Monday=0) or 'mon'..'sun', got %r" % (name, v))
    return frozenset(out)


# -- checks and presets -------------------------------------------------------------------
def check_number(name, value, low=None, high=None, low_open=False):
    """``value`` as a float, or ``ValueError`` naming ``name`` if not finite / out of range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, got %r" % (name, value)) from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise ValueError("%s must be a finite number, got %r" % (name, value))
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError("%s must be %s %r, got %r" % (name, ">" if low_open else ">=", low, value))
    if high is not None and v > high:
        raise ValueError("%s must be <= %r, got %r" % (name, high, value))
    return v


def resolve_preset(presets, name, argname, overrides):
    """The preset ``presets[name]`` with the non-None ``overrides`` applied."""
    if name not in presets:
        raise ValueError("%s: unknown %r; known: %s" % (argname, name, ", ".join(sorted(presets))))
    out = dict(presets[name])
    out.update((k, v) for k, v in overrides.items() if v is not None)
    return out


# -- seeded randomness --------------------------------------------------------------------
def mix_seed(seed, stream, index):
    """A 64-bit integer from (seed, stream name, slot index), stable across runs and versions."""
    key = ("%d|%s|%d" % (seed, stream, index)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def slot_rng(seed, stream, index):
    """A ``random.Random`` for slot ``index`` of ``stream``; use only its ``random()``."""
    return random.Random(mix_seed(seed, stream, index))


def normal(rng):
    """A standard normal variate (Box-Muller on ``rng.random()``)."""
    u1 = 1.0 - rng.random()
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * rng.random())


def exponential(rng, mean):
    return -mean * math.log(1.0 - rng.random())


def lognormal(rng, median, sigma, low, high):
    """A log-normal variate, clipped to [low, high]."""
    return min(high, max(low, median * math.exp(sigma * normal(rng))))


def uniform(rng, low, high):
    return low + (high - low) * rng.random()


def poisson_times(rng, t0, t1, rate_per_s):
    """Sorted event times of a homogeneous Poisson process on [t0, t1)."""
    out = []
    if rate_per_s <= 0.0:
        return out
    t = t0 + exponential(rng, 1.0 / rate_per_s)
    while t < t1:
        out.append(t)
        t += exponential(rng, 1.0 / rate_per_s)
    return out


def binomial(rng, n, p):
    return sum(1 for _ in range(n) if rng.random() < p)


class Memo:
    """A bounded cache of deterministic values: dropping entries never changes a result."""

    def __init__(self, make, limit=4096):
        self._make = make
        self._limit = limit
        self._d = {}

    def __call__(self, key):
        d = self._d
        v = d.get(key)
        if v is None:
            if len(d) >= self._limit:
                d.clear()
            v = d[key] = self._make(key)
        return v


class SmoothNoise:
    """A smooth random signal: N(0,1) values at knots every ``period_s`` (clipped to +-3),
    joined by a smoothstep ease. A pure function of (seed, stream, t)."""

    def __init__(self, seed, stream, period_s):
        self._seed = seed
        self._stream = stream
        self._period = float(period_s)
        self._knots = Memo(self._knot)
        self._k = None
        self._a = self._b = 0.0

    def _knot(self, k):
        z = normal(slot_rng(self._seed, self._stream, k))
        return max(-3.0, min(3.0, z))

    def __call__(self, t):
        x = t / self._period
        k = math.floor(x)
        if k != self._k:
            self._k, self._a, self._b = k, self._knots(k), self._knots(k + 1)
        f = x - k
        return self._a + (self._b - self._a) * f * f * (3.0 - 2.0 * f)


def relax(x, target, dt, tau):
    """First-order step: ``x`` after ``dt`` seconds relaxing toward constant ``target``."""
    return target + (x - target) * math.exp(-dt / tau)


def relax_cascade(x, y, x_target, y_offset, y_gain, dt, tau_x, tau_y):
    """Exact step of x' = (x_target - x)/tau_x, y' = (y_offset + y_gain*x - y)/tau_y.

    A medium (``x``, e.g. water) relaxing to a target, read through a lagging probe (``y``,
    e.g. a pipe clamp) whose equilibrium is ``y_offset + y_gain * x``. Returns (x, y)."""
    if abs(tau_x - tau_y) < 1e-6 * tau_y:
        tau_x = tau_y * (1.0 + 1e-6)
    big_x = x - x_target
    y_inf = y_offset + y_gain * x_target
    c = y_gain * big_x * tau_x / (tau_x - tau_y)
    ex = math.exp(-dt / tau_x)
    return x_target + big_x * ex, y_inf + c * ex + (y - y_inf - c) * math.exp(-dt / tau_y)


# -- the models' common shape ---------------------------------------------------------------
class EnvironmentModel:
    """Base of every environment model: ``at(wall_s) -> dict``; callable as ``truth(wall_s)``
    for ``SimI2CDevice``."""

    def __init__(self, seed=0):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed must be an int, got %r" % (seed,))
        self.seed = seed

    def at(self, wall_s):
        raise NotImplementedError

    def __call__(self, wall_s):
        return self.at(wall_s)

    def sample(self, start_s, end_s, sample_s, key):
        """(times, values) of ``key`` at ``start_s, start_s + sample_s, ...`` < ``end_s``."""
        sample_s = check_number("sample_s", sample_s, 0.0, low_open=True)
        times, values = [], []
        n = int(math.ceil((end_s - start_s) / sample_s))
        for i in range(max(0, n)):
            t = start_s + i * sample_s
            times.append(t)
            values.append(self.at(t)[key])
        return times, values


class GridModel(EnvironmentModel):
    """A model with state, integrated on a fixed grid (see the module docstring).

    Subclasses set ``step_s`` (divides an hour), ``warmup_s`` (a multiple of ``step_s``) and
    implement ``_initial_state(t0) -> list``, ``_advance(state, t0, t1)`` (in place; t1 - t0
    <= step_s and [t0, t1) lies within one step) and ``_observe(state, t) -> dict``; a model
    whose state renews (forgets its past at an event) may implement ``_renewal``."""

    step_s = 60
    warmup_s = DAY_S
    block_s = WEEK_S
    runs_kept = 16

    def __init__(self, seed=0):
        EnvironmentModel.__init__(self, seed)
        self._runs = {}  # block index -> _Run
        self._k = None
        self._run = None

    def at(self, wall_s):
        t = check_number("wall_s", wall_s)
        step = self.step_s
        g = int(math.floor(t / step)) * step
        state = self._grid_state(g)
        if t > g:
            state = list(state)
            self._advance(state, g, t)
        return self._observe(state, t)

    def _grid_state(self, g):
        """The state at grid time ``g`` (s): from the trail, or integrated on to ``g``. The
        caller must not change it."""
        k = (g - MONDAY_EPOCH_S) // self.block_s
        run = self._run if k == self._k else self._open(k)
        step = self.step_s
        if g <= run.t:
            i = (g - run.start) // step * run.width
            return run.trail[i:i + run.width].tolist()
        state, t, start, trail = run.state, run.t, run.start, run.trail
        while t < g:
            nxt = t + step
            self._advance(state, t, nxt)
            t = nxt
            if t >= start:
                trail.extend(state)
        run.t = t
        return state

    def _renewal(self, t0, t1):
        """The start (grid time, s) of the last step in [t0, t1) whose end state does not depend
        on its start state, or None: a run's warm-up need not integrate what comes before."""
        return None

    def _open(self, k):
        """The run of block ``k``, started at its warm-up (or the warm-up's last renewal) if it
        is not kept."""
        run = self._runs.get(k)
        if run is None:
            if len(self._runs) >= self.runs_kept:
                self._runs.pop(next(iter(self._runs)))
            start = MONDAY_EPOCH_S + k * self.block_s
            t0 = start - self.warmup_s
            renewed = self._renewal(t0, start)
            if renewed is not None:
                t0 = renewed
            run = self._runs[k] = _Run(start, t0, list(self._initial_state(t0)))
        self._k, self._run = k, run
        return run


class _Run:
    """One block's integration: the state at ``t`` (its furthest grid time, s) and the trail of
    every grid state from ``start`` (the block's first grid time, s) to ``t``, ``width``
    doubles each."""

    __slots__ = ("start", "t", "state", "width", "trail")

    def __init__(self, start, t0, state):
        self.start = start
        self.t = t0
        self.state = state
        self.width = len(state)
        self.trail = array("d", state) if t0 >= start else array("d")


# -- ground truth over sampled series (pure functions) --------------------------------------
def intervals_where(times, flags, sample_s, min_duration_s=0.0):
    """Maximal runs of true ``flags`` as [(start_s, end_s)], each sample standing for
    [t, t + sample_s); runs shorter than ``min_duration_s`` are dropped."""
    out = []
    start = None
    for t, f in zip(times, flags):
        if f and start is None:
            start = t
        elif not f and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, times[-1] + sample_s))
    return [(a, b) for a, b in out if b - a >= min_duration_s]


def duration_where_s(flags, sample_s):
    """Total seconds for which ``flags`` is true (each sample stands for ``sample_s``)."""
    return sum(1 for f in flags if f) * sample_s


def window_means(times, values, window_s):
    """[(window_start_s, mean)] over windows aligned to multiples of ``window_s`` (clock
    hours for 3600), for every window with samples."""
    out = []
    cur, acc, n = None, 0.0, 0
    for t, v in zip(times, values):
        w = math.floor(t / window_s) * window_s
        if w != cur:
            if n:
                out.append((cur, acc / n))
            cur, acc, n = w, 0.0, 0
        acc += v
        n += 1
    if n:
        out.append((cur, acc / n))
    return out


def rise_events(times, values, rise, window_s):
    """Times at which ``values`` has risen by >= ``rise`` above its minimum over the
    preceding ``window_s``; one time (the first) per episode."""
    out = []
    in_episode = False
    lo = 0
    for i, (t, v) in enumerate(zip(times, values)):
        while times[lo] < t - window_s:
            lo += 1
        risen = v - min(values[lo:i + 1]) >= rise
        if risen and not in_episode:
            out.append(t)
        in_episode = risen
    return out
