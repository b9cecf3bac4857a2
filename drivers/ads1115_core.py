"""The ADS1115 driver's core: what a node reads with (``ADS1115Core``: single-shot
conversions, polled to completion), the register fields and the conversions it needs.
REFERENCE §3.1; the theory of operation is in ``drivers.ads1115``.

``drivers.ads1115`` is the full driver (``ADS1115``: this plus continuous mode, the decoded
configuration, gain names, volts to codes) and re-exports every public name here; a node
imports only this module, so the rest takes no heap on it (docs/benchmarks.md, heap).

Errors: bus failures are ``OSError``; bad arguments ``ValueError`` naming the argument; a
device that does not finish or keep its configuration ``DeviceError``.
Runs on MicroPython and CPython.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers.clock import Deadline
from drivers.errors import DeviceError

# Pointer register values (REFERENCE §3.1).
_REG_CONVERSION = const(0x00)
_REG_CONFIG = const(0x01)
_REG_LO_THRESH = const(0x02)
_REG_HI_THRESH = const(0x03)

CONFIG_RESET = const(0x8583)  # Config power-on value (REFERENCE §3.1)
LO_THRESH_RESET = const(0x8000)
HI_THRESH_RESET = const(0x7FFF)

# Config register fields (REFERENCE §3.1 table).
_OS = const(0x8000)  # bit 15
_MUX_SHIFT = const(12)  # bits 14:12
_PGA_SHIFT = const(9)  # bits 11:9
_MODE = const(0x0100)  # bit 8: 1 = single-shot
_DR_SHIFT = const(5)  # bits 7:5
_COMP_MODE = const(0x0010)  # bit 4
_COMP_POL = const(0x0008)  # bit 3
_COMP_LAT = const(0x0004)  # bit 2
_COMP_QUE_MASK = const(0x0003)  # bits 1:0, 11 = comparator off

ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)  # ADDR pin to GND, VDD, SDA, SCL

# MUX codes 0..7 in order: four differential pairs, then AINx against GND.
MUX_NAMES = ("AIN0-AIN1", "AIN0-AIN3", "AIN1-AIN3", "AIN2-AIN3", "AIN0", "AIN1", "AIN2", "AIN3")
# PGA codes 0..5 (6 and 7 are also ±0.256 V).
FSR_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)
# DR codes 0..7.
DATA_RATES_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
WAKE_US = const(25)  # power-up before a single-shot conversion (SBAS444 §9.4.2.1)
# SBAS444 electrical characteristics, "data rate variation ±10 %": the slowest chip in spec
# converts at 0.9 DR, so in 1/(0.9 DR) (the simulated ADC draws its error in this range).
_SLOWEST_DR = 0.9
_POLL_LIMIT = const(20)  # OS polls after the nominal conversion time before giving up
_POLLS_PER_CONVERSION = const(40)  # poll interval = conversion time / 40 (>= 1 ms)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def mux_code(mux):
    """MUX code 0..7 for ``mux``: "AIN0".."AIN3" (or "AIN0-GND") single-ended, or a
    differential pair "AIN0-AIN1", "AIN0-AIN3", "AIN1-AIN3", "AIN2-AIN3" (case and spaces
    ignored). Raises ``ValueError`` naming ``mux`` for anything else."""
    if isinstance(mux, str):
        name = mux.upper().replace(" ", "")
        if name.endswith("-GND"):
            name = name[:-4]
        for i in range(len(MUX_NAMES)):
            if MUX_NAMES[i] == name:
                return i
    raise ValueError("mux must be one of %s, got %r" % (", ".join(MUX_NAMES), mux))


def pga_code(fsr_v):
    """PGA code 0..5 for a full-scale range ``fsr_v`` (volts, e.g. 4.096).
    Raises ``ValueError`` naming ``fsr_v`` for a range the PGA does not have."""
    if _is_number(fsr_v):
        for i in range(len(FSR_V)):
            if abs(FSR_V[i] - fsr_v) < 1e-6:
                return i
    raise ValueError("fsr_v must be one of %s V, got %r" % (FSR_V, fsr_v))


def dr_code(data_rate_sps):
    """DR code 0..7 for ``data_rate_sps``; ``ValueError`` names ``data_rate_sps``."""
    if _is_number(data_rate_sps):
        for i in range(len(DATA_RATES_SPS)):
            if DATA_RATES_SPS[i] == data_rate_sps:
                return i
    raise ValueError("data_rate_sps must be one of %s, got %r" % (DATA_RATES_SPS, data_rate_sps))


def _bit(name, value):
    if value is True or value == 1:
        return 1
    if value is False or value == 0:
        return 0
    raise ValueError("%s must be 0 or 1, got %r" % (name, value))


def config_word(mux, fsr_v, data_rate_sps, single_shot=True, start=True,
                comp_mode=0, comp_pol=0, comp_lat=0, comp_que=3):
    """The 16-bit Config register value.

    ``mux``: see ``mux_code``; ``fsr_v``: full-scale range in volts (see ``FSR_V``);
    ``data_rate_sps``: one of ``DATA_RATES_SPS``; ``single_shot``: MODE bit; ``start``: OS bit
    (1 starts a conversion when the device is powered down). Comparator fields default to
    the reset state (comparator off). Raises ``ValueError`` naming the bad argument.
    """
    word = mux_code(mux) << _MUX_SHIFT
    word |= pga_code(fsr_v) << _PGA_SHIFT
    word |= dr_code(data_rate_sps) << _DR_SHIFT
    if _bit("start", start):
        word |= _OS
    if _bit("single_shot", single_shot):
        word |= _MODE
    if _bit("comp_mode", comp_mode):
        word |= _COMP_MODE
    if _bit("comp_pol", comp_pol):
        word |= _COMP_POL
    if _bit("comp_lat", comp_lat):
        word |= _COMP_LAT
    if not (isinstance(comp_que, int) and 0 <= comp_que <= 3) or isinstance(comp_que, bool):
        raise ValueError("comp_que must be 0..3, got %r" % (comp_que,))
    return word | comp_que


def fsr_of_config(word):
    """The FSR (V) a Config register value selects (PGA codes 6 and 7 are ±0.256 V too)."""
    return FSR_V[min((word >> _PGA_SHIFT) & 7, 5)]


def data_rate_of_config(word):
    """The data rate (SPS) a Config register value selects."""
    return DATA_RATES_SPS[(word >> _DR_SHIFT) & 7]


def raw_to_v(raw, fsr_v):
    """Volts for a signed conversion result ``raw`` at full-scale range ``fsr_v``."""
    return raw * FSR_V[pga_code(fsr_v)] / 32768


def conversion_time_ms(data_rate_sps):
    """Nominal conversion time in ms: 1000 / DR (125 ms at 8 SPS)."""
    return _conversion_ms(dr_code(data_rate_sps))


def _conversion_ms(code):
    """``conversion_time_ms`` of DR code ``code`` (0..7, as Config holds it)."""
    return 1000.0 / DATA_RATES_SPS[code]


def single_shot_ms(data_rate_sps):
    """Whole ms from a single-shot start until the result is there on any chip in spec:
    wake-up plus 1/(0.9 DR) (the datasheet's -10 % data rate), rounded up, plus 1 ms because
    ``ticks_ms`` counts whole ms (140 at 8 SPS). The driver waits this once, then checks OS."""
    return _single_shot_ms(dr_code(data_rate_sps))


def _single_shot_ms(code):
    """``single_shot_ms`` of DR code ``code`` (0..7, as Config holds it)."""
    t = _conversion_ms(code) / _SLOWEST_DR + WAKE_US / 1000.0
    n = int(t)
    return (n if n == t else n + 1) + 1


class ADS1115Core:
    """One ADS1115 on ``bus`` (``drivers.bus`` contract), timed by ``clock``: single-shot
    conversions (and leaving continuous mode, which ``drivers.ads1115.ADS1115`` can enter).

    Bus failures are ``OSError`` (NACK: ``errno.ENODEV``, stuck bus: ``errno.ETIMEDOUT``);
    bad arguments ``ValueError``; a device that does not finish or keep its configuration
    ``DeviceError``.
    """

    def __init__(self, bus, clock, address=0x48):
        if address not in ADDRESSES:
            raise ValueError("address must be 0x48..0x4B (ADDR pin), got %r" % (address,))
        self._bus = bus
        self._clock = clock
        self.address = address
        self._busy = Deadline(clock)
        self._buf = bytearray(2)
        self._fsr_v = 2.048  # FSR of the conversion in progress (reset PGA)
        self._config = CONFIG_RESET
        self._ptr = None  # the pointer this driver last wrote (None: not yet)

    # -- registers --------------------------------------------------------------------------
    def write_register(self, pointer, value):
        """Write 16-bit ``value`` to register ``pointer`` (0..3): ptr, MSB, LSB."""
        if pointer not in (_REG_CONVERSION, _REG_CONFIG, _REG_LO_THRESH, _REG_HI_THRESH):
            raise ValueError("pointer must be 0..3, got %r" % (pointer,))
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ValueError("value must be 0..0xFFFF, got %r" % (value,))
        self._bus.writeto(self.address, bytes((pointer, value >> 8, value & 0xFF)))
        self._ptr = pointer

    def read_register(self, pointer):
        """Read 16-bit register ``pointer`` (0..3) as an unsigned int.

        The pointer is always written first, although the chip remembers it: after a power
        cycle it is back at 0 and a remembered pointer would read the wrong register. The
        pointer write and the read are one bus transaction joined by a repeated START
        (datasheet SBAS444D §9.5.3: after the pointer byte a STOP "can be issued", then the
        read's START; the ADS111xL datasheet SBASAV5 names it: a STOP or a repeated START).
        ``OSError`` (bus); the pointer is then not known until the next write.
        """
        if pointer not in (_REG_CONVERSION, _REG_CONFIG, _REG_LO_THRESH, _REG_HI_THRESH):
            raise ValueError("pointer must be 0..3, got %r" % (pointer,))
        buf = self._buf
        self._ptr = None  # a failed read leaves the chip's pointer unknown
        self._bus.readfrom_mem_into(self.address, pointer, buf)
        self._ptr = pointer
        return (buf[0] << 8) | buf[1]

    def _read_pointed(self):
        """The 16-bit register the pointer selects (one read transaction)."""
        buf = self._buf
        self._bus.readfrom_into(self.address, buf)
        return (buf[0] << 8) | buf[1]

    def read_config(self):
        """The Config register (int); bit 15 reads 1 when no conversion is running."""
        return self.read_register(_REG_CONFIG)

    def write_config(self, word):
        """Write the Config register (see ``config_word``)."""
        self.write_register(_REG_CONFIG, word)
        self._config = word
        self._fsr_v = fsr_of_config(word)

    # -- single-shot ---------------------------------------------------------------------------
    def start_single_shot(self, mux, fsr_v, data_rate_sps):
        """Start one conversion; returns the ms until its result is there (``single_shot_ms``).

        Arguments as ``config_word``. If the device was left in continuous mode, it is first
        stopped and its last conversion waited out: the chip ignores OS=1 while converting,
        and would otherwise hand back a result of the old input.
        Raises ``ValueError`` (arguments), ``OSError`` (bus), ``DeviceError`` (as
        ``wait_conversion``, while stopping continuous mode).
        """
        return self._start(config_word(mux, fsr_v, data_rate_sps, single_shot=True, start=True))

    def _start(self, word):
        """``start_single_shot`` with its Config ``word`` (OS and MODE set) already made."""
        if not self._config & _MODE:
            self.stop_continuous()
            self._wait_conversion((self._config >> _DR_SHIFT) & 7)
        self.write_config(word)
        ms = _single_shot_ms((word >> _DR_SHIFT) & 7)
        self._busy.set_ms(ms)
        return ms

    def read_conversion_raw(self):
        """The Conversion register as a signed int (-32768..32767): the LAST completed
        result, which is stale while a conversion is running. ``OSError`` (bus)."""
        v = self.read_register(_REG_CONVERSION)
        return v - 0x10000 if v & 0x8000 else v

    def wait_conversion(self, data_rate_sps):
        """Wait out the conversion time (``start_single_shot``'s), then check the OS bit; a
        chip still converting is polled (at most ``_POLL_LIMIT`` times, 1/40 of the
        conversion time apart, at least 1 ms). Config is read where the pointer already is
        after the Config write (REFERENCE §3.1: the pointer is remembered): one transaction.
        A chip reset meanwhile has its pointer back at Conversion, whose 0 then fails the
        read-back check below.

        Raises ``DeviceError`` if OS stays 0 or the Config register no longer reads back
        as written (device reset mid-conversion), ``OSError`` for bus failures; ``ValueError``
        names a ``data_rate_sps`` the chip does not have.
        """
        self._wait_conversion(dr_code(data_rate_sps))

    def _wait_conversion(self, code):
        """``wait_conversion`` at DR code ``code`` (0..7, as Config holds it)."""
        self._busy.wait()
        interval_ms = int(_conversion_ms(code)) // _POLLS_PER_CONVERSION or 1
        for i in range(_POLL_LIMIT):
            cfg = self._read_pointed() if self._ptr == _REG_CONFIG else self.read_config()
            if (cfg | _OS) != (self._config | _OS):
                raise DeviceError(
                    "ADS1115 at 0x%02X: Config reads 0x%04X, wrote 0x%04X; the device was "
                    "reset or is not an ADS1115: check its supply and re-run the measurement"
                    % (self.address, cfg, self._config))
            if cfg & _OS:
                return
            self._clock.sleep_ms(interval_ms)
        raise DeviceError(
            "ADS1115 at 0x%02X: conversion still running %d ms past its %d ms "
            "(OS bit stuck at 0); power-cycle the ADC"
            % (self.address, _POLL_LIMIT * interval_ms, _single_shot_ms(code)))

    def read_single_shot_v(self, mux, fsr_v, data_rate_sps):
        """One single-shot conversion of ``mux`` at ``fsr_v`` and ``data_rate_sps``, in volts.

        Writes Config with OS=1, waits ``single_shot_ms`` on the injected clock, checks the
        OS bit (polled, bounded, on a chip out of spec), then reads the Conversion register:
        three bus transactions. Raises ``ValueError`` (arguments),
        ``OSError`` (bus), ``DeviceError`` (conversion never finished / device reset).
        """
        return self.convert_v(config_word(mux, fsr_v, data_rate_sps, single_shot=True, start=True))

    def convert_v(self, word):
        """``read_single_shot_v`` with its Config ``word`` made by the caller (``config_word``
        with ``single_shot`` and ``start``): a node that converts the same inputs every cycle
        makes its words once. Volts; raises ``ValueError`` unless ``word`` is a 16-bit Config
        value with OS and MODE set, otherwise as ``read_single_shot_v``.
        """
        if not isinstance(word, int) or not 0 <= word <= 0xFFFF or word & (_OS | _MODE) != _OS | _MODE:
            raise ValueError("word must be a single-shot Config word (OS and MODE set), got %r" % (word,))
        self._busy.wait()  # a conversion already running would ignore our OS=1
        self._start(word)
        self._wait_conversion((word >> _DR_SHIFT) & 7)
        # self._fsr_v is fsr_of_config(word): raw_to_v's FSR without matching it again
        return self.read_conversion_raw() * self._fsr_v / 32768

    def stop_continuous(self):
        """Back to single-shot: the device powers down after the conversion in progress
        (``is_conversion_ready`` turns true then). ``OSError`` (bus)."""
        self.write_config((self._config | _MODE) & ~_OS & 0xFFFF)
        self._busy.set_ms(single_shot_ms(data_rate_of_config(self._config)))
