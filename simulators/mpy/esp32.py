"""The ``esp32`` module for the MicroPython unix port under simulation: the deep-sleep wake
sources a node configures. They are checked and kept, but nothing in the simulator drives a
pin, so only the timer (``machine.deepsleep(ms)``) wakes a simulated board. No ``NVS``: the
firmware keeps its state on the littlefs flash.
"""

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True

# RTC GPIOs, the only pins that can wake the chip from deep sleep (REFERENCE §5).
_RTC_GPIOS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)

_wake = {"ext0": None, "ext1": None, "touch": False}


def _pin_id(pin):
    pin_id = getattr(pin, "id", pin)
    if pin_id not in _RTC_GPIOS:
        raise ValueError("invalid pin: %r is not an RTC GPIO" % (pin_id,))
    return pin_id


def wake_on_ext0(pin, level):
    """Wake from deep sleep when ``pin`` (an RTC GPIO, or None to clear) is at ``level``."""
    _wake["ext0"] = None if pin is None else (_pin_id(pin), 1 if level else 0)


def wake_on_ext1(pins, level):
    """Wake when any of ``pins`` is high (``WAKEUP_ANY_HIGH``) or all are low."""
    _wake["ext1"] = None if pins is None else (tuple(_pin_id(p) for p in pins), bool(level))


def wake_on_touch(wake):
    _wake["touch"] = bool(wake)


def _reset():
    """A reset: the wake configuration is RAM, so it goes (``board.py`` calls this)."""
    _wake["ext0"] = None
    _wake["ext1"] = None
    _wake["touch"] = False
