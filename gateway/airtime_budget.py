"""The LoRaWAN upstream's airtime budget: EU868 duty cycle and TTN fair use (pure core).

No clock, no I/O: the caller passes ``now_ms``, a non-decreasing millisecond count on its
monotonic clock (never wall time, which may step). Built on ``protocol.airtime``, which owns
time on air, the data-rate table and the sliding-window budgets.

Theory of operation
-------------------
Two independent limits apply to every frame the gateway's modem transmits (join requests
included); a frame may start only when **both** allow it:

* **Duty cycle** (ETSI EN 300 220-2, REFERENCE.md §6.2): on sub-band M (868.0–868.6 MHz,
  where EU868's three default channels 868.1/868.3/868.5 MHz lie) at most 1 % of any sliding
  hour, 36 s. This is the law; the modem enforces it too, so the budget here is the
  gateway's own, earlier refusal: rows stay in the outbox, the radio is never asked.
* **TTN fair use** (only with ``ttn_fair_use``): 30 s of uplink airtime and 10 downlinks
  (acks of confirmed uplinks included) per device in any 24 h. A policy of The Things
  Network's community network, not a law; a private ChirpStack has only the duty cycle.

``wait_ms(toa_ms, now_ms)`` says how long until a frame of ``toa_ms`` may start (0 = now)
and which limit binds. Record what went on air with ``record_uplink``: pass the frame's
*start* as late as it can have been (``start_ms = max(sent_at, returned_at - toa)``), so the
recorded end is never before the real one and the windows only ever over-count.
``can_downlink``/``record_downlink`` count the network's downlinks against fair use, so the
forwarder asks for a confirmed uplink only while an ack can still be afforded.

Worked figures (``plan``; docs/gateway-lorawan-upstream.md has the table): a full 51-byte
uplink at DR0 (SF12) is 2793.5 ms on air, so 12 fit an hour and 10 a TTN day; a full
222-byte uplink at DR5 (SF7) is 368.9 ms: 97 an hour, 81 a TTN day.

Surviving a restart. ``state(now_ms)`` is the windows as JSON (each entry's end relative
to ``now_ms``), which the forwarder stores in the gateway's SQLite state
(``gateway.outbox_state``, ``synchronous=FULL``); ``AirtimeBudget.restore(state, now_ms)``
puts it back on the new process's clock. Time the gateway was off counts as no time at all:
a budget spent just before a restart (or a power cut) still counts for up to an hour (a day
for fair use) of running time after it, never less (the windows only over-count; a wall
clock that may have stepped is never consulted). Before each transmission the forwarder
stores the state *with the frame already counted* (``reserve``: its airtime, ending as late
as the send can end), so a power cut in the middle of an uplink cannot forget it.
"""

from protocol import airtime

BAND = "M"  # EU868 default channels 868.1/868.3/868.5 MHz (REFERENCE §6.2)
JOIN_REQUEST_PHY = 23  # MHDR 1 + JoinEUI 8 + DevEUI 8 + DevNonce 2 + MIC 4 (LoRaWAN 1.0.x)

DUTY_CYCLE = "duty_cycle"
FAIR_USE = "fair_use"
NEVER = "never"  # a frame longer than a whole budget (not possible with EU868 LoRa DRs)


def uplink_airtime_ms(dr, n_app):
    """Time on air (ms, float) of an uplink of ``n_app`` application bytes at EU868 ``dr``."""
    return airtime.dr_airtime_ms(dr, n_app)


def join_airtime_ms(dr):
    """Time on air (ms, float) of one OTAA join request at EU868 ``dr``."""
    sf, bw, _ = airtime.DR_EU868[_dr(dr)]
    return airtime.time_on_air_ms(JOIN_REQUEST_PHY, sf, bw)


def _dr(dr):
    if isinstance(dr, bool) or not isinstance(dr, int) or dr not in airtime.DR_EU868:
        raise ValueError("dr must be an EU868 LoRa data rate 0..6, got %r" % (dr,))
    return dr


def plan(dr, n_app=None, ttn_fair_use=False):
    """Figures for steady uplinks of ``n_app`` bytes (default: the DR's full payload) at
    ``dr``: ``{"n_app", "toa_ms", "per_hour", "per_day", "min_interval_s"}`` — how many the
    duty cycle allows per hour, and per day (capped by TTN's 30 s when ``ttn_fair_use``)."""
    n = airtime.max_app_payload(_dr(dr)) if n_app is None else n_app
    toa = uplink_airtime_ms(dr, n)
    per_hour = airtime.hourly_budget_ms(BAND) // airtime.ceil_ms(toa)
    per_day = per_hour * 24
    if ttn_fair_use:
        per_day = min(per_day, airtime.TTN_UPLINK_MS_PER_DAY // airtime.ceil_ms(toa))
    return {"n_app": n, "toa_ms": toa, "per_hour": per_hour, "per_day": per_day,
            "min_interval_s": airtime.min_interval_ms(toa, BAND) / 1000.0}


STATE_VERSION = 1


def _check_now(now_ms):
    if isinstance(now_ms, bool) or not isinstance(now_ms, int):
        raise ValueError("now_ms must be an integer ms count, got %r" % (now_ms,))


class AirtimeBudget:
    """Duty cycle on sub-band ``band`` and, if ``ttn_fair_use``, TTN's daily allowance
    (``protocol.airtime.SlidingWindow``s: at most ``max_entries`` records each).

    Methods raise ``ValueError`` for a malformed ``toa_ms`` or ``now_ms`` (an int ms count)."""

    def __init__(self, ttn_fair_use=False, band=BAND, max_entries=32):
        self.band = band
        self.ttn_fair_use = bool(ttn_fair_use)
        self._duty = airtime.SlidingWindow(airtime.HOUR_MS, airtime.hourly_budget_ms(band),
                                           max_entries)  # ValueError for an unknown band
        self._up = self._down = None
        if self.ttn_fair_use:
            self._up = airtime.SlidingWindow(airtime.DAY_MS, airtime.TTN_UPLINK_MS_PER_DAY,
                                             max_entries)
            self._down = airtime.SlidingWindow(airtime.DAY_MS, airtime.TTN_DOWNLINKS_PER_DAY,
                                               max_entries)
        self.changes = 0  # +1 at every record: the caller stores the state when it moved

    def wait_ms(self, toa_ms, now_ms):
        """``(wait_ms, reason)``: ms from ``now_ms`` until a frame of ``toa_ms`` may start
        (0 = now, reason "") and the binding limit (``DUTY_CYCLE`` or ``FAIR_USE``); a frame
        no budget can ever hold gives ``(None, NEVER)``."""
        toa = airtime.ceil_ms(toa_ms)  # ValueError for a malformed airtime
        _check_now(now_ms)
        if toa > self._duty.budget or (self._up is not None and toa > self._up.budget):
            return None, NEVER
        wait = self._duty.wait(toa, now_ms + toa)
        reason = DUTY_CYCLE if wait else ""
        if self._up is not None:
            fair = self._up.wait(toa, now_ms + toa)
            if fair > wait:
                wait, reason = fair, FAIR_USE
        return wait, reason

    def record_uplink(self, toa_ms, start_ms):
        """Account a frame (uplink or join request) of ``toa_ms`` that started at ``start_ms``."""
        _check_now(start_ms)
        toa = airtime.ceil_ms(toa_ms)
        for w in (self._duty, self._up):
            if w is not None:
                w.add(start_ms + toa, toa, start_ms)
        self.changes += 1

    def can_downlink(self, now_ms):
        """True if one more downlink (or confirmed-uplink ack) fits the fair-use allowance
        (always True without ``ttn_fair_use``)."""
        _check_now(now_ms)
        return self._down is None or self._down.wait(1, now_ms) == 0

    def record_downlink(self, now_ms):
        """Account one downlink or ack received at ``now_ms`` (fair use only)."""
        _check_now(now_ms)
        if self._down is not None:
            self._down.add(now_ms, 1)
            self.changes += 1

    def usage(self, now_ms):
        """``{"duty_used_ms", "duty_budget_ms"}`` for the hour ending at ``now_ms``, plus
        ``"fair_used_ms", "fair_budget_ms", "downlinks_used"`` for the day with fair use."""
        _check_now(now_ms)
        out = {"duty_used_ms": self._duty.used(now_ms), "duty_budget_ms": self._duty.budget}
        if self._up is not None:
            out.update(fair_used_ms=self._up.used(now_ms), fair_budget_ms=self._up.budget,
                       downlinks_used=self._down.used(now_ms))
        return out

    # -- surviving a restart ---------------------------------------------------------------------
    def _windows(self):
        return (("duty", self._duty), ("fair_up", self._up), ("fair_down", self._down))

    def state(self, now_ms, reserve=None):
        """The windows as JSON-able data, each entry ``[end - now_ms, amount]``; ``reserve``:
        ``(toa_ms, start_ms, end_ms)`` of a frame about to go, counted as ending at
        ``end_ms`` (as late as it can end) without being recorded here."""
        _check_now(now_ms)
        out = {"v": STATE_VERSION, "band": self.band}
        for name, w in self._windows():
            if w is None:
                continue
            entries = w.entries
            if reserve is not None and name != "fair_down":
                copy = airtime.SlidingWindow(w.window_ms, w.budget, w.max_entries)
                copy.entries = [list(e) for e in entries]
                toa, start, end = reserve
                _check_now(start)
                _check_now(end)
                copy.add(end, airtime.ceil_ms(toa), start)
                entries = copy.entries
            out[name] = [[end - now_ms, amount] for end, amount in entries]
        return out

    def restore(self, state, now_ms):
        """Put back a ``state()`` as of ``now_ms`` on this clock (the time in between counts
        as none). A window the state lacks stays as it is. Raises ``ValueError`` (naming
        what) for a state that is not one, leaving the budget unchanged."""
        _check_now(now_ms)
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError("airtime state: not a version %d state: %r"
                             % (STATE_VERSION, str(state)[:80]))
        if state.get("band") != self.band:
            raise ValueError("airtime state: band %r, this budget's is %r"
                             % (state.get("band"), self.band))
        got = []
        for name, w in self._windows():
            entries = state.get(name)
            if w is None or entries is None:
                continue
            if not isinstance(entries, list) or not all(
                    isinstance(e, list) and len(e) == 2 and all(
                        type(x) is int for x in e) and 0 <= e[1] <= w.budget for e in entries):
                raise ValueError("airtime state: %s is not a list of [end_ms, amount] pairs"
                                 % name)
            got.append((w, sorted(entries)))
        for w, entries in got:
            w.entries = [[now_ms + rel_end, amount] for rel_end, amount in entries]
            while len(w.entries) > w.max_entries:  # as SlidingWindow.add merges: later end,
                first = w.entries.pop(0)           # summed amount (only over-counts)
                w.entries[0][1] += first[1]
        self.changes += 1
