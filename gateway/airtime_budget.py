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

The budget is kept in memory: a gateway restart starts it empty. The modem's own duty-cycle
enforcement still holds then; TTN's daily allowance could be exceeded once by a gateway
restarted in the middle of a busy day (documented, and counted by the network).
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


class AirtimeBudget:
    """Duty cycle on sub-band ``band`` and, if ``ttn_fair_use``, TTN's daily allowance.

    Methods raise ``ValueError`` for a malformed ``toa_ms`` or ``now_ms`` (an int ms count)."""

    def __init__(self, ttn_fair_use=False, band=BAND, max_entries=32):
        airtime.hourly_budget_ms(band)  # ValueError for an unknown band
        self.band = band
        self.ttn_fair_use = bool(ttn_fair_use)
        self.duty = airtime.DutyCycle(max_entries=max_entries)
        self.fair = airtime.FairUse(max_entries=max_entries) if self.ttn_fair_use else None

    def wait_ms(self, toa_ms, now_ms):
        """``(wait_ms, reason)``: ms from ``now_ms`` until a frame of ``toa_ms`` may start
        (0 = now, reason "") and the binding limit (``DUTY_CYCLE`` or ``FAIR_USE``); a frame
        no budget can ever hold gives ``(None, NEVER)``."""
        toa = airtime.ceil_ms(toa_ms)  # ValueError for a malformed airtime
        if isinstance(now_ms, bool) or not isinstance(now_ms, int):
            raise ValueError("now_ms must be an integer ms count, got %r" % (now_ms,))
        if toa > airtime.hourly_budget_ms(self.band) or (
                self.fair is not None and toa > airtime.TTN_UPLINK_MS_PER_DAY):
            return None, NEVER
        wait = self.duty.wait_ms(self.band, toa, now_ms)
        reason = DUTY_CYCLE if wait else ""
        if self.fair is not None:
            fair = self.fair.uplink_wait_ms(toa, now_ms)
            if fair > wait:
                wait, reason = fair, FAIR_USE
        return wait, reason

    def record_uplink(self, toa_ms, start_ms):
        """Account a frame (uplink or join request) of ``toa_ms`` that started at ``start_ms``."""
        self.duty.record(self.band, toa_ms, start_ms)
        if self.fair is not None:
            self.fair.record_uplink(toa_ms, start_ms)

    def can_downlink(self, now_ms):
        """True if one more downlink (or confirmed-uplink ack) fits the fair-use allowance
        (always True without ``ttn_fair_use``)."""
        return self.fair is None or self.fair.can_downlink(now_ms)

    def record_downlink(self, now_ms):
        """Account one downlink or ack received at ``now_ms`` (fair use only)."""
        if self.fair is not None:
            self.fair.record_downlink(now_ms)

    def usage(self, now_ms):
        """``{"duty_used_ms", "duty_budget_ms"}`` for the hour ending at ``now_ms``, plus
        ``"fair_used_ms", "fair_budget_ms", "downlinks_used"`` for the day with fair use."""
        out = {"duty_used_ms": self.duty.used_ms(self.band, now_ms),
               "duty_budget_ms": airtime.hourly_budget_ms(self.band)}
        if self.fair is not None:
            out.update(fair_used_ms=self.fair.uplink_used_ms(now_ms),
                       fair_budget_ms=airtime.TTN_UPLINK_MS_PER_DAY,
                       downlinks_used=self.fair.downlinks_used(now_ms))
        return out
