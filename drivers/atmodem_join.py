"""The join-time half of ``drivers.atmodem.ATModem``: ``configure`` (OTAA credentials) and
``join`` (bounded attempts with backoff), with the dialect's sequences (``JOIN`` in each dialect
module names the module that holds its ``configure`` / ``join_once`` / ``REGIONS``; None: the
dialect module itself).

A node needs this only on a boot whose modem has no session; ``ATModem.configure`` / ``join``
load it for the call and release it (``drivers.release``), so it takes no heap while the
node packs and sends (docs/benchmarks.md, heap). Behaviour, errors and the bytes on the wire
are those documented on the ``ATModem`` methods. Runs on MicroPython and CPython.
"""

import binascii

from drivers.atmodem import SUBBAND, _airtime, check_dr


def _dialect_join(m):
    """The module with the dialect's join-time sequences: ``drivers.<JOIN>``, or the dialect
    module itself when its ``JOIN`` is None."""
    name = m._d.JOIN
    return m._d if name is None else getattr(__import__("drivers." + name), name)


def _hex_id(value, nbytes, name):
    """Upper-case hex of an EUI or key given as bytes or hex text; ValueError naming ``name``."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != nbytes:
            raise ValueError("%s must be %d bytes, got %d" % (name, nbytes, len(value)))
        return binascii.hexlify(value).decode().upper()
    if isinstance(value, str):
        v = value.replace(":", "").replace(" ", "").replace("-", "")
        if len(v) == 2 * nbytes:
            try:
                binascii.unhexlify(v)
                return v.upper()
            except ValueError:
                pass
    raise ValueError("%s must be %d bytes or %d hex digits" % (name, nbytes, 2 * nbytes))


def configure(m, dev_eui, join_eui, app_key, region, adr, dr):
    """``ATModem.configure``."""
    d = _dialect_join(m)
    dev = _hex_id(dev_eui, 8, "dev_eui")
    app = _hex_id(join_eui, 8, "join_eui")
    key = _hex_id(app_key, 16, "app_key")
    if region not in d.REGIONS:
        raise ValueError("region must be one of %s, got %r" % (", ".join(d.REGIONS), region))
    if dr is not None:
        check_dr(dr)
    m._secret = key
    m.joined = False
    m.state = {}
    d.configure(m, dev, app, key, region, bool(adr), dr)
    m.region = region
    m.adr = bool(adr)
    m.dr = dr


def join(m, timeout_ms, attempts, backoff_ms, max_backoff_ms):
    """``ATModem.join``."""
    d = _dialect_join(m)
    for name, v in (("timeout_ms", timeout_ms), ("attempts", attempts), ("backoff_ms", backoff_ms)):
        if not isinstance(v, int) or v < 1:
            raise ValueError("%s must be a positive integer, got %r" % (name, v))
    clock = m._clock
    start = clock.ticks_ms()
    pause_ms = backoff_ms
    for i in range(attempts):
        left = timeout_ms - clock.ticks_diff(clock.ticks_ms(), start)
        if left <= 0:
            break
        toa, hint = _join_budget(m)
        if hint is None:
            m.counters["join_attempts"] += 1
            t0 = m.now_ms()
            joined, hint, sent = d.join_once(m, left)
            if sent and toa is not None:
                m._duty.record(SUBBAND, toa, t0)
            if joined:
                m.joined = True
                m.counters["joins"] += 1
                return True
        wait = pause_ms if hint is None or hint < pause_ms else hint
        if i == attempts - 1 or wait >= timeout_ms - clock.ticks_diff(clock.ticks_ms(), start):
            break
        clock.sleep_ms(wait)
        pause_ms = min(pause_ms * 2, max_backoff_ms)
    return False


def _join_budget(m):
    # A join request is 23 PHY bytes (MHDR, JoinEUI, DevEUI, DevNonce, MIC; LoRaWAN 1.0.x).
    if m._duty is None:
        return None, None
    a = _airtime()
    sf, bw, _ = a.DR_EU868[check_dr(m.get_dr())]
    toa = a.time_on_air_ms(23, sf, bw)
    wait = m._duty.wait_ms(SUBBAND, toa, m.now_ms())
    if wait:
        m.counters["duty_cycle"] += 1
        return toa, wait
    return toa, None


def set_dr(m, dr):
    """``ATModem.set_dr`` (``dr`` checked): the dialect's command."""
    _dialect_join(m).set_dr(m, dr)


def get_dev_eui(m):
    """``ATModem.get_dev_eui``: the dialect's read."""
    return _dialect_join(m).get_dev_eui(m)
