"""Duty-cycle and fair-use budgets for LoRa uplinks, and the EU868 sub-band table.

Split out of ``protocol.airtime`` (time on air and the DR table, which a node needs) because only
the gateway and the simulators keep budgets: a node does not load this module (the modem
enforces the duty cycle; docs/benchmarks.md, heap). ``protocol.airtime`` still answers for these
names (``airtime.DutyCycle``) by loading this module on first use.

Pure functions and small state machines: no clock is read here. Callers pass ``now_ms``
from their injected clock (the simulator's virtual ms, the gateway's monotonic ms) as a
non-decreasing count of milliseconds; it must not be a wrapping ``ticks_ms`` value.
Runs on MicroPython and CPython.

Theory of operation: the duty-cycle window
-------------------------------------------
ETSI EN 300 220-2 limits the transmitter's on-time per sub-band over a **sliding** one-hour
observation window (REFERENCE §6.2): in *any* hour, at most 1 % (36 s) on band M, and so
on. The check that matters for a new transmission of ``toa`` starting at ``now`` is the hour
that ends when it ends, ``(now + toa - 1 h, now + toa]``: every other hour containing it
holds no more past airtime than that one plus the part of the new frame it leaves out.
A past transmission is counted **in full** while any part of it lies in that hour (it
leaves the window at ``its end + 1 h``), which can only over-count, never under-count.

Memory is bounded: each band keeps at most ``max_entries`` ``[end_ms, airtime_ms]`` records,
oldest first. When the list is full the two oldest merge into one record with the later end
and the summed airtime: the merged record is counted at least as long as either original
was, so merging also only errs towards caution. A leaky bucket would need O(1) memory but
is the wrong shape: a bucket that lets a node spend its 36 s in one burst would then refill
at 1 % and allow up to 72 s in one hour; one that never allows a burst refuses legal
traffic. Airtime is rounded up to whole milliseconds so that all window arithmetic is exact
integer arithmetic (``wait_ms`` then really is the first moment ``can_send`` is true).

``FairUse`` applies the same window to TTN's community fair-use policy: 30 s of uplink
airtime and 10 downlinks (ACKs of confirmed uplinks included) per device per 24 h.
"""

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from protocol.airtime import DAY_MS, _check_int, ceil_ms  # noqa: F401  (DAY_MS: this API's too)

HOUR_MS = const(3600000)

# ETSI EN 300 220-2 v3.2.1 sub-bands (REFERENCE §6.2): letter -> (lo_hz, hi_hz, duty in
# per-mille). Budgets per sub-band per hour: 0.1 % = 3.6 s, 1 % = 36 s, 10 % = 360 s.
SUBBANDS = {
    "K": (863000000, 865000000, 1),
    "L": (865000000, 868000000, 10),
    "M": (868000000, 868600000, 10),
    "N": (868700000, 869200000, 1),
    "P": (869400000, 869650000, 100),
    "Q": (869700000, 870000000, 10),
}

# TTN Sandbox fair use (REFERENCE §6.2).
TTN_UPLINK_MS_PER_DAY = const(30000)
TTN_DOWNLINKS_PER_DAY = const(10)


def subband(freq_hz, bw_hz=0):
    """ETSI sub-band letter ("K", "L", "M", "N", "P", "Q") of a channel at ``freq_hz``.

    With ``bw_hz`` the whole channel ``freq ± bw/2`` must lie inside the band. Raises
    ``ValueError`` for a frequency outside every EU868 sub-band (including the gaps between
    them, which carry other rules)."""
    _check_int("freq_hz", freq_hz, 0, 10000000000)
    _check_int("bw_hz", bw_hz, 0, 10000000)
    lo = freq_hz - bw_hz // 2
    hi = freq_hz + (bw_hz - bw_hz // 2)
    for letter in SUBBANDS:
        b_lo, b_hi, _ = SUBBANDS[letter]
        if b_lo <= lo and hi <= b_hi and (bw_hz or freq_hz < b_hi):
            return letter
    raise ValueError("freq_hz %d (bw %d Hz) is not inside one EU868 sub-band K-Q"
                     % (freq_hz, bw_hz))


def duty_cycle(band):
    """Duty-cycle limit of sub-band ``band`` as a fraction (0.01 for 1 %)."""
    return _band(band)[2] / 1000


def _band(band):
    entry = SUBBANDS.get(band)
    if entry is None:
        raise ValueError("band must be one of K L M N P Q, got %r" % (band,))
    return entry


def hourly_budget_ms(band):
    """On-air ms allowed per sliding hour on ``band`` (36000 at 1 %)."""
    return HOUR_MS * _band(band)[2] // 1000


def min_interval_ms(toa_ms, band="M"):
    """Shortest steady interval (ms) between frames of ``toa_ms`` on one ``band``
    (100 x ToA at 1 %)."""
    return toa_ms * 1000 / _band(band)[2]


def _check_now(now_ms):
    if not isinstance(now_ms, int) or isinstance(now_ms, bool):
        raise ValueError("now_ms must be an integer ms count, got %r" % (now_ms,))


class SlidingWindow:
    """Amounts spent at given end times, summed over a sliding window (see module docstring).

    An entry counts at time ``at`` while ``end > at - window_ms``."""

    def __init__(self, window_ms, budget, max_entries=32):
        _check_int("window_ms", window_ms, 1, 1 << 40)
        _check_int("budget", budget, 0, 1 << 40)
        _check_int("max_entries", max_entries, 2, 100000)
        self.window_ms = window_ms
        self.budget = budget
        self.max_entries = max_entries
        self.entries = []  # [end_ms, amount], ascending end

    def used(self, at_ms):
        """Amount counted in the window ending at ``at_ms``."""
        cut = at_ms - self.window_ms
        total = 0
        for end, amount in self.entries:
            if end > cut:
                total += amount
        return total

    def wait(self, amount, at_ms):
        """Smallest delay ≥ 0 after which ``amount`` fits in the window ending at
        ``at_ms + delay``; None if ``amount`` exceeds the whole budget."""
        if amount > self.budget:
            return None
        cut = at_ms - self.window_ms
        excess = self.used(at_ms) + amount - self.budget
        if excess <= 0:
            return 0
        for end, spent in self.entries:
            if end > cut:
                excess -= spent
                if excess <= 0:
                    return end + self.window_ms - at_ms
        return 0  # unreachable: the counted entries sum to used()

    def add(self, end_ms, amount, start_ms=None):
        """Record ``amount`` ending at ``end_ms`` (spent from ``start_ms``, default the end);
        forget what can no longer count at any time from ``start_ms`` on."""
        cut = (end_ms if start_ms is None else start_ms) - self.window_ms
        entries = self.entries
        while entries and entries[0][0] <= cut:
            entries.pop(0)
        i = len(entries)
        while i > 0 and entries[i - 1][0] > end_ms:
            i -= 1
        entries.insert(i, [end_ms, amount])
        if len(entries) > self.max_entries:
            first = entries.pop(0)
            entries[0][1] += first[1]  # the later end, the summed amount


class DutyCycle:
    """Per-sub-band sliding one-hour airtime budgets (ETSI EN 300 220-2), on caller time.

    ``toa_ms`` is rounded up to whole ms; ``now_ms`` is the transmission's start. Methods
    raise ``ValueError`` for an unknown band or a bad number."""

    def __init__(self, max_entries=32, window_ms=HOUR_MS):
        self.max_entries = max_entries
        self.window_ms = window_ms
        self._bands = {}

    def _window(self, band):
        w = self._bands.get(band)
        if w is None:
            w = SlidingWindow(self.window_ms, self.window_ms * _band(band)[2] // 1000,
                              self.max_entries)
            self._bands[band] = w
        return w

    def used_ms(self, band, now_ms):
        """Airtime (ms) counted on ``band`` in the hour ending at ``now_ms``."""
        _check_now(now_ms)
        return self._window(band).used(now_ms)

    def can_send(self, band, toa_ms, now_ms):
        """True if a frame of ``toa_ms`` starting at ``now_ms`` keeps ``band`` within budget."""
        _check_now(now_ms)
        toa = ceil_ms(toa_ms)
        return self._window(band).wait(toa, now_ms + toa) == 0

    def wait_ms(self, band, toa_ms, now_ms):
        """Ms to wait from ``now_ms`` until ``can_send`` is true (0 = now). Raises
        ``ValueError`` if the frame is longer than the band's whole hourly budget."""
        _check_now(now_ms)
        toa = ceil_ms(toa_ms)
        w = self._window(band)
        delay = w.wait(toa, now_ms + toa)
        if delay is None:
            raise ValueError("toa_ms %r exceeds band %s's budget of %d ms per hour"
                             % (toa_ms, band, w.budget))
        return delay

    def record(self, band, toa_ms, now_ms):
        """Account a frame of ``toa_ms`` sent on ``band`` starting at ``now_ms``."""
        _check_now(now_ms)
        toa = ceil_ms(toa_ms)
        self._window(band).add(now_ms + toa, toa, now_ms)


class FairUse:
    """TTN fair use over a sliding 24 h: uplink airtime (ms) and downlink count.

    Defaults: 30 s of uplink airtime and 10 downlinks per device per day (REFERENCE §6.2).
    The policy is a network's rule, not a regulation: use it to plan, and on a private
    ChirpStack network use only ``DutyCycle``."""

    def __init__(self, uplink_ms_per_day=TTN_UPLINK_MS_PER_DAY,
                 downlinks_per_day=TTN_DOWNLINKS_PER_DAY, max_entries=32):
        self._up = SlidingWindow(DAY_MS, uplink_ms_per_day, max_entries)
        self._down = SlidingWindow(DAY_MS, downlinks_per_day, max_entries)

    def uplink_used_ms(self, now_ms):
        """Uplink airtime (ms) counted in the 24 h ending at ``now_ms``."""
        _check_now(now_ms)
        return self._up.used(now_ms)

    def downlinks_used(self, now_ms):
        """Downlinks counted in the 24 h ending at ``now_ms``."""
        _check_now(now_ms)
        return self._down.used(now_ms)

    def uplink_wait_ms(self, toa_ms, now_ms):
        """Ms from ``now_ms`` until an uplink of ``toa_ms`` fits (0 = now); ``ValueError`` if
        it exceeds the whole daily allowance."""
        _check_now(now_ms)
        toa = ceil_ms(toa_ms)
        delay = self._up.wait(toa, now_ms + toa)
        if delay is None:
            raise ValueError("toa_ms %r exceeds the daily uplink allowance" % (toa_ms,))
        return delay

    def can_uplink(self, toa_ms, now_ms):
        """True if an uplink of ``toa_ms`` starting at ``now_ms`` stays within the policy."""
        _check_now(now_ms)
        toa = ceil_ms(toa_ms)
        return self._up.wait(toa, now_ms + toa) == 0

    def record_uplink(self, toa_ms, now_ms):
        """Account an uplink of ``toa_ms`` starting at ``now_ms``."""
        _check_now(now_ms)
        toa = ceil_ms(toa_ms)
        self._up.add(now_ms + toa, toa, now_ms)

    def can_downlink(self, now_ms):
        """True if one more downlink (or confirmed-uplink ACK) at ``now_ms`` is allowed."""
        _check_now(now_ms)
        return self._down.wait(1, now_ms) == 0

    def record_downlink(self, now_ms):
        """Account one downlink (or ACK) at ``now_ms``."""
        _check_now(now_ms)
        self._down.add(now_ms, 1)


def uplinks_per_day(toa_ms, airtime_ms_per_day=TTN_UPLINK_MS_PER_DAY):
    """How many uplinks of ``toa_ms`` fit a daily airtime allowance (486 at SF7 11 B)."""
    if not toa_ms > 0:
        raise ValueError("toa_ms must be > 0, got %r" % (toa_ms,))
    return int(airtime_ms_per_day // toa_ms)
