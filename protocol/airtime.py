"""LoRa time on air and the EU868 data-rate table.

Pure functions: no clock is read here.
Runs on MicroPython and CPython.

Time on air (REFERENCE.md §6.1, Semtech AN1200.13)::

    T_sym     = 2**SF / BW
    T_pre     = (n_pre + 4.25) * T_sym
    n_payload = 8 + max(ceil((8*PL - 4*SF + 28 + 16*CRC - 20*IH) / (4*(SF - 2*DE))) * (CR + 4), 0)
    ToA       = T_pre + n_payload * T_sym

computed in whole quarter-symbols so the only rounding is the final division.

The duty-cycle and fair-use budgets (``DutyCycle``, ``FairUse``, ``SlidingWindow``,
``subband`` and the ETSI sub-band table) live in ``protocol.dutycycle``, which only the gateway
and the simulators use: a node does not load them (docs/benchmarks.md, heap). Their names
stay reachable here (``airtime.DutyCycle``): the module's ``__getattr__`` loads them on first
use, on MicroPython as on CPython.
"""

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + FPort 1 + MIC 4 (REFERENCE §6.1)
PHY_OVERHEAD = const(13)
MAX_FOPTS = const(15)
REPEATER_MAX_APP = const(222)  # DR4-7 app payload for repeater compatibility (M 230)

# dr -> (sf, bw_hz, max_app_payload N with FOpts empty); REFERENCE §6.1 (RAK dr_calculator,
# LoRaWAN RP 1.0.3revA). DR7 is FSK, which time_on_air_ms does not model, so it is left out.
DR_EU868 = {
    0: (12, 125000, 51),
    1: (11, 125000, 51),
    2: (10, 125000, 51),
    3: (9, 125000, 115),
    4: (8, 125000, 242),
    5: (7, 125000, 242),
    6: (7, 250000, 242),
}

DAY_MS = const(86400000)  # ceil_ms's bound (a day of airtime)

def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or value > hi:
        raise ValueError("%s must be an integer in %d..%d, got %r" % (name, lo, hi, value))
    return value


def _symbols_x4(payload_bytes, sf, cr, preamble, explicit_header, crc, de):
    # Quarter-symbols: 4 * (n_pre + 4.25 + n_payload).
    num = 8 * payload_bytes - 4 * sf + 28 + (16 if crc else 0) - (0 if explicit_header else 20)
    den = 4 * (sf - 2 * de)
    blocks = -((-num) // den)  # ceil for any sign
    n_payload = 8 + (blocks * (cr + 4) if blocks > 0 else 0)
    return 4 * preamble + 17 + 4 * n_payload


def time_on_air_ms(payload_bytes, sf, bw_hz=125000, cr=1, preamble=8, explicit_header=True,
                   crc=True, low_dr_optimize=None):
    """Time on air in ms (float) of one LoRa frame of ``payload_bytes`` PHY payload bytes.

    ``sf`` 6..12; ``bw_hz`` e.g. 125000/250000/500000; ``cr`` 1..4 for 4/5..4/8;
    ``preamble`` symbols; ``low_dr_optimize`` None = on for SF11/SF12 at 125 kHz (LoRaWAN).
    For a LoRaWAN uplink pass ``app_payload_to_phy(n_app)``. Raises ``ValueError`` naming a
    bad argument."""
    _check_int("payload_bytes", payload_bytes, 0, 255)
    _check_int("sf", sf, 6, 12)
    _check_int("bw_hz", bw_hz, 1, 10000000)
    _check_int("cr", cr, 1, 4)
    _check_int("preamble", preamble, 0, 65535)
    if low_dr_optimize is None:
        low_dr_optimize = sf >= 11 and bw_hz == 125000
    de = 1 if low_dr_optimize else 0
    q = _symbols_x4(payload_bytes, sf, cr, preamble, explicit_header, crc, de)
    # ToA_ms = q/4 * 2**SF / BW * 1000
    return q * (1 << sf) * 250 / bw_hz


def app_payload_to_phy(n_app, fopts=0):
    """PHY payload bytes for ``n_app`` application bytes and ``fopts`` bytes of FOpts (+13)."""
    _check_int("n_app", n_app, 0, 242)
    _check_int("fopts", fopts, 0, MAX_FOPTS)
    return n_app + PHY_OVERHEAD + fopts


def dr_airtime_ms(dr, n_app, fopts=0):
    """Uplink time on air in ms at EU868 data rate ``dr`` (0..6) for ``n_app`` app bytes."""
    sf, bw, _ = _dr(dr)
    return time_on_air_ms(app_payload_to_phy(n_app, fopts), sf, bw)


def _dr(dr):
    entry = DR_EU868.get(dr) if isinstance(dr, int) else None
    if entry is None:
        raise ValueError("dr must be an EU868 LoRa data rate 0..6, got %r" % (dr,))
    return entry


def max_app_payload(dr, fopts=0, repeater_compatible=True):
    """Largest application payload (bytes) at EU868 ``dr`` with ``fopts`` FOpts bytes.

    ``repeater_compatible`` (default True, as ARCHITECTURE.md's 222 B at DR4-5) caps N at
    222 so a frame survives a repeater; False gives the regional N (242)."""
    _check_int("fopts", fopts, 0, MAX_FOPTS)
    n = _dr(dr)[2]
    if repeater_compatible and n > REPEATER_MAX_APP:
        n = REPEATER_MAX_APP
    return n - fopts


def ceil_ms(toa_ms):
    """``toa_ms`` (int or float, ≥ 0) rounded up to whole ms, as the budgets count it."""
    if not isinstance(toa_ms, (int, float)) or isinstance(toa_ms, bool) or not toa_ms >= 0 \
            or toa_ms > DAY_MS:
        raise ValueError("toa_ms must be a number in 0..%d, got %r" % (DAY_MS, toa_ms))
    whole = int(toa_ms)
    return whole if whole == toa_ms else whole + 1


def __getattr__(name):
    # The budgets (protocol.dutycycle), loaded on first use: see the module docstring.
    from protocol import dutycycle

    try:
        return getattr(dutycycle, name)
    except AttributeError:
        raise AttributeError("module 'protocol.airtime' has no attribute %r" % (name,)) from None
