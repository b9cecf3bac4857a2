"""The chip behind the ``machine`` shim, loaded on first use (``machine.__getattr__``):
resets and sleep, ``RTC``, ``WDT``, ``ADC``, ``freq``, ``unique_id`` (and ``UART``, from
``simuart``). Firmware imports them from ``machine`` as on an ESP32; see ``machine`` and
``docs/simulator-board.md``.
"""

import os
import sys

import simclock
import simlink
from machine import DEEPSLEEP_RESET, SOFT_RESET, Pin
from simlink import BoardReset, SimError
from simuart import UART, _close_uarts  # noqa: F401 (machine.UART)

_freq_hz = 160000000  # the ESP32 port's default CPU clock


def deepsleep(time_ms=None):
    """Deep sleep for ``time_ms`` (None or 0: until a reset). Never returns: the board resets
    and ``board.py`` runs boot.py and main.py again at the wake time."""
    now = simclock.now_us()  # a shim call: a watchdog already overdue fires here
    raise BoardReset(DEEPSLEEP_RESET, now + int(time_ms) * 1000 if time_ms else None)


stop_at_us = None  # board.py --until-s: a light sleep past this ends the run (BoardStop)


def lightsleep(time_ms=None):
    """Sleep ``time_ms`` of virtual time and return; RAM is kept. The WiFi link drops (the
    radio is off in light sleep) and reassociates by itself. The watchdog keeps counting
    (on an ESP32 light sleep can starve it: micropython issue #5778)."""
    if not time_ms:
        raise SimError("lightsleep() with no time: nothing in the simulator would wake the board")
    if stop_at_us is not None and simclock.now_us() + int(time_ms) * 1000 > stop_at_us:
        raise simlink.BoardStop()
    simclock.advance_us(int(time_ms) * 1000)
    net = sys.modules.get("network")
    if net is not None:
        net._radio_off(simclock.now_us())


sleep = lightsleep  # the port's older name


def reset():
    """Reset the board (``reset_cause()`` is then ``SOFT_RESET``, as on the ESP32 port)."""
    raise BoardReset(SOFT_RESET, simclock.now_us())


def soft_reset():
    """Restart the interpreter: boot.py and main.py run again, the reset cause is unchanged."""
    raise BoardReset(None, simclock.now_us())


def freq(hz=None):
    """CPU frequency in Hz; setting takes 20, 40, 80, 160 or 240 MHz (ESP32 port)."""
    global _freq_hz
    if hz is None:
        return _freq_hz
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq_hz = hz


def unique_id():
    """6 bytes (the ESP32's base MAC): ``$CIVICEDGE_UNIQUE_ID`` (12 hex digits) or a fixed
    value. Public, so never a source of keys."""
    text = os.getenv("CIVICEDGE_UNIQUE_ID") or "240ac4000001"
    return bytes(int(text[i:i + 2], 16) for i in range(0, 12, 2))


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


# -- RTC -------------------------------------------------------------------------------------
RTC_MEMORY_MAX = 2048  # MICROPY_HW_RTC_USER_MEM_MAX, the ESP32 port's default (REFERENCE §5)
# Kept through deep sleep, watchdog and soft resets, lost at power-on: upstream keeps it in
# RTC_NOINIT_ATTR memory "so the user memory survives WDT resets and the like"
# (ports/esp32/machine_rtc.c). Here it lives in this module, which board.py keeps across
# resets and a killed process loses.
_rtc_memory = b""


class RTC:
    """``machine.RTC()``: the board's clock (see ``simclock``) and its user memory."""

    def __init__(self, id=0):
        pass

    def datetime(self, datetimetuple=None):
        """Get or set ``(year, month, day, weekday, hours, minutes, seconds, subseconds µs)``."""
        if datetimetuple is None:
            wall = simclock.wall_s()
            secs = int(wall // 1)
            t = simclock._port_time.gmtime(secs)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], int((wall - secs) * 1000000))
        y, mo, d, _, h, mi, s, us = datetimetuple
        simclock.set_wall_s(simclock._port_time.mktime((y, mo, d, h, mi, s, 0, 0)) + us / 1000000)

    init = datetime

    def memory(self, data=None):
        """Get (bytes) or set the RTC user memory; ``ValueError`` beyond 2048 bytes."""
        global _rtc_memory
        if data is None:
            return _rtc_memory
        if len(data) > RTC_MEMORY_MAX:
            raise ValueError("buffer too long")
        _rtc_memory = bytes(data)


# -- WDT -------------------------------------------------------------------------------------
class WDT:
    """``machine.WDT(timeout=ms)``: once started it cannot stop. Not fed within ``timeout`` of
    virtual time, the board resets (``WDT_RESET``) at the next shim call, or when the
    application stops (an uncaught exception, main.py ending); the server keeps the deadline."""

    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("timeout must be > 0 ms, got %r" % (timeout,))
        self._timeout_ms = timeout
        self.feed()

    def feed(self):
        simlink.wdt(self._timeout_ms)


# -- ADC ---------------------------------------------------------------------------------------
class ADC:
    """``machine.ADC(pin, atten=...)`` reading the voltage the simulator holds for the pin
    (``control analog [pin, volts]``: a battery divider, a sensor output)."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 0
    WIDTH_10BIT = 1
    WIDTH_11BIT = 2
    WIDTH_12BIT = 3
    # Full-scale volts per attenuation (ESP-IDF driver/adc.h, VDD_A 3.3 V); at 11 dB the pin
    # itself stops at VDD_A.
    _FULL_SCALE_V = (1.1, 1.5, 2.2, 3.9)
    _VDD_A_V = 3.3

    def __init__(self, pin, *, atten=ATTN_0DB):
        self._pin = pin.id if isinstance(pin, Pin) else pin
        self._atten = atten

    def init(self, *, atten=None):
        if atten is not None:
            self.atten(atten)

    def atten(self, atten):
        if atten not in (0, 1, 2, 3):
            raise ValueError("atten must be one of ADC.ATTN_*, got %r" % (atten,))
        self._atten = atten

    def width(self, width):
        pass

    def read_uv(self):
        """Microvolts on the pin, clipped to the attenuation's range."""
        volts = simlink.control("analog", self._pin)
        return int(min(max(volts, 0.0), self._FULL_SCALE_V[self._atten], self._VDD_A_V) * 1000000)

    def read_u16(self):
        return self.read_uv() * 65535 // int(self._FULL_SCALE_V[self._atten] * 1000000)

    def read(self):
        return self.read_uv() * 4095 // int(self._FULL_SCALE_V[self._atten] * 1000000)
