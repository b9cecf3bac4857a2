"""The LoRaWAN link's join (``LoRaWANLink.open`` when the modem has no session): configure the
modem, ``JOIN_ATTEMPTS`` OTAA attempts ``JOIN_PAUSE_MS`` apart with the watchdog fed, and the
backoff across wakes after a failed boot (``app/links/lorawan.py``'s module docstring).

A waking node whose modem kept its session never needs this; ``open()`` loads it only for a
join and releases it afterwards (docs/benchmarks.md, heap). Runs on MicroPython (and CPython
for tests).
"""

from drivers.errors import DriverError

JOIN_ATTEMPTS = 2  # per boot; the backoff across wakes does the rest
JOIN_PAUSE_MS = 8000  # between the attempts of one boot
JOIN_TIMEOUT_MS = 20000  # one attempt (the driver waits at most its JOIN_WAIT_MS for the result)
_FEED_SLICE_MS = 5000  # sleep in slices the watchdog outlives
_BACKOFF_MAX_EXP = 16


def join(link, failed):
    """The rest of ``link.open()`` after the modem said it has no session (``failed``: asking
    it failed instead): True once joined; False after a failure or while the join backs off."""
    c = link.counters
    if not failed:
        link.joined = False
        if c["join_skip"] > 0:
            c["join_skip"] -= 1
            return False
        m = link.modem
        try:
            lw = link.lw
            dev_eui = lw["dev_eui"] or m.get_dev_eui()
            m.configure(dev_eui, lw["join_eui"], link._app_key, region=lw["region"], adr=lw["adr"],
                        dr=lw["data_rate"])
            for i in range(JOIN_ATTEMPTS):
                if i:
                    _pause(link, JOIN_PAUSE_MS)
                link.feed()
                c["join_attempts"] += 1
                if m.join(timeout_ms=JOIN_TIMEOUT_MS, attempts=1):
                    link.joined = True
                    c["joins"] += 1
                    c["join_backoff"] = c["join_skip"] = 0
                    return True
        except (OSError, DriverError):
            failed = True
    if failed:
        c["link_errors"] += 1
    _back_off(link)
    return False


def _back_off(link):
    c = link.counters
    c["join_backoff"] = min(c["join_backoff"] + 1, _BACKOFF_MAX_EXP)
    most = link.lw["join_backoff_max_s"] // max(1, link.cfg["interval_s"])
    c["join_skip"] = min(1 << (c["join_backoff"] - 1), most)


def _pause(link, ms):
    while ms > 0:
        link.feed()
        step = ms if ms < _FEED_SLICE_MS else _FEED_SLICE_MS
        link.clock.sleep_ms(step)
        ms -= step
