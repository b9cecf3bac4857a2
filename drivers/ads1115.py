"""TI ADS1115 16-bit delta-sigma ADC (I2C, 0x48..0x4B).

The register map and the conversions are pure functions (``config_word``,
``decode_config``, ``raw_to_v``, ...); ``ADS1115`` is a thin class over the bus and clock.
Facts from REFERENCE.md §3.1 (TI SBAS444 config-register field table) unless marked.

Theory of operation (single-shot, the default and lowest-power mode)
--------------------------------------------------------------------
Writing the Config register with OS=1 while the device is powered down starts one
conversion: the device powers up (~25 µs, TI SBAS444 §9.4.2.1), reads OS as 0 while it
converts for 1/DR, stores the result in the Conversion register and powers down again
(OS reads 1). The Conversion register keeps the previous result until then, so reading it
early silently gives an old value: ``read_single_shot_v`` therefore checks the OS bit before
reading. The internal oscillator may run up to 10 % slow (SBAS444 electrical
characteristics, "data rate variation ±10 %"), so the driver waits once for the slowest
chip in spec (``single_shot_ms``: 1/(0.9 DR) plus the wake-up, 140 ms at 8 SPS), reads Config
where the Config write left the pointer, and polls (bounded) only a chip still converting:
a conversion is three bus transactions (write Config; read Config; write the pointer and
read the result, joined by a repeated START). A caller that converts the same inputs again
and again (a node, every minute) makes each Config word once (``config_word``) and converts
with ``convert_v(word)``: the same three transactions, without matching the input's name,
the range and the data rate to their register codes (strings case-folded, tables searched)
at every conversion.

A conversion that never finishes (OS stays 0 after the poll budget), or a Config register
that does not read back as written (the device was reset mid-conversion, or it is not an
ADS1115), raises ``DeviceError``: the bus worked, the device's answer says it failed.
``OSError(ETIMEDOUT)`` is kept for a bus that does not release (the shared error contract),
so a scheduler can tell "recover the bus" from "power-cycle the sensor".

The node's part of the driver (``ADS1115Core``: single-shot conversions, the register
fields and conversions it uses) is ``drivers.ads1115_core``, re-exported here; a node imports
only that (docs/benchmarks.md, heap).

Runs on MicroPython and CPython.
"""

from drivers.ads1115_core import (  # noqa: F401  (re-exported: the driver's public names)
    ADDRESSES, CONFIG_RESET, DATA_RATES_SPS, FSR_V, HI_THRESH_RESET, LO_THRESH_RESET, MUX_NAMES, WAKE_US,
    ADS1115Core, _is_number, config_word, conversion_time_ms, data_rate_of_config, dr_code, fsr_of_config,
    mux_code, pga_code, raw_to_v, single_shot_ms)

# Adafruit-style gain names for the same FSRs (gain 2/3 = ±6.144 V).
_GAINS = ((2 / 3, 6.144), (1, 4.096), (2, 2.048), (4, 1.024), (8, 0.512), (16, 0.256))


def fsr_for_gain(gain):
    """The FSR (V) of a PGA ``gain`` 2/3, 1, 2, 4, 8 or 16; ``ValueError`` names ``gain``."""
    if _is_number(gain):
        for g, fsr in _GAINS:
            if abs(g - gain) < 1e-6:
                return fsr
    raise ValueError("gain must be one of 2/3, 1, 2, 4, 8, 16, got %r" % (gain,))


def decode_config(word):
    """The fields of a Config register value, as a dict.

    Keys: ``os`` (0/1; read: 1 = idle), ``mux`` (name), ``fsr_v``, ``pga`` (raw code 0..7),
    ``single_shot`` (bool), ``data_rate_sps``, ``comp_mode``, ``comp_pol``, ``comp_lat``,
    ``comp_que``. Raises ``ValueError`` naming ``word`` unless 0 <= word <= 0xFFFF.
    """
    if not isinstance(word, int) or isinstance(word, bool) or not 0 <= word <= 0xFFFF:
        raise ValueError("word must be a 16-bit register value 0..0xFFFF, got %r" % (word,))
    # Field positions: REFERENCE §3.1 table (OS 15, MUX 14:12, PGA 11:9, MODE 8, DR 7:5,
    # COMP_MODE 4, COMP_POL 3, COMP_LAT 2, COMP_QUE 1:0).
    return {
        "os": (word >> 15) & 1,
        "mux": MUX_NAMES[(word >> 12) & 7],
        "fsr_v": fsr_of_config(word),
        "pga": (word >> 9) & 7,
        "single_shot": bool((word >> 8) & 1),
        "data_rate_sps": data_rate_of_config(word),
        "comp_mode": (word >> 4) & 1,
        "comp_pol": (word >> 3) & 1,
        "comp_lat": (word >> 2) & 1,
        "comp_que": word & 3,
    }


def ready_in_ms(data_rate_sps):
    """Whole ms from a start until a result is expected on a chip at its nominal data rate:
    wake-up plus 1/DR, rounded up (126 at 8 SPS). ``single_shot_ms`` is the worst case."""
    t = conversion_time_ms(data_rate_sps) + WAKE_US / 1000.0
    n = int(t)
    return n if n == t else n + 1


def lsb_v(fsr_v):
    """Size of one LSB in volts: FSR / 32768 (e.g. 125 µV at ±4.096 V)."""
    return FSR_V[pga_code(fsr_v)] / 32768


def v_to_raw(v, fsr_v):
    """The conversion result for ``v`` volts: rounded to the nearest code and clipped to
    -32768..32767 as the ADC saturates (an input beyond the FSR reads full scale)."""
    raw = int(round(v * 32768 / FSR_V[pga_code(fsr_v)]))
    if raw > 32767:
        return 32767
    if raw < -32768:
        return -32768
    return raw


def int16_from_bytes(msb, lsb):
    """Signed 16-bit value from two bytes, MSB first (two's complement)."""
    raw = (msb << 8) | lsb
    return raw - 0x10000 if raw & 0x8000 else raw


class ADS1115(ADS1115Core):
    """One ADS1115 on ``bus`` (``drivers.bus`` contract), timed by ``clock``: single-shot
    (``ADS1115Core``) and continuous conversions.

    Bus failures are ``OSError`` (NACK: ``errno.ENODEV``, stuck bus: ``errno.ETIMEDOUT``);
    bad arguments ``ValueError``; a device that does not finish or keep its configuration
    ``DeviceError``.
    """

    def is_conversion_ready(self):
        """True when no conversion is running (the OS bit of Config reads 1). Single-shot
        mode only: in continuous mode the device is always converting. ``OSError`` (bus)."""
        return bool(self.read_config() & 0x8000)  # OS, bit 15 (REFERENCE §3.1)

    # -- continuous mode -----------------------------------------------------------------------
    def start_continuous(self, mux, fsr_v, data_rate_sps):
        """Convert continuously; returns ms until the first result is in. Later results
        replace it every 1/DR. ``read_continuous_v`` reads the latest."""
        self.write_config(config_word(mux, fsr_v, data_rate_sps, single_shot=False, start=False))
        ms = ready_in_ms(data_rate_sps)
        # +10 %: the first result must really be there (no OS polling in this mode).
        ms += ms // 10 + 1
        self._busy.set_ms(ms)
        return ms

    def read_continuous_v(self):
        """The latest continuous-mode result in volts (waits for the first one)."""
        self._busy.wait()
        return raw_to_v(self.read_conversion_raw(), self._fsr_v)
