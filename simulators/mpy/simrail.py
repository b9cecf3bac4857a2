"""The board's switched sensor rail under simulation (``board.py --rail PIN[:active_low]``;
docs/simulator-board.md, "Sensor rail"). Loaded only for a board that has one: ``config``
wraps ``machine.Pin``'s ``__init__``, ``init``, ``_drive`` and ``mode`` for the rail's pin,
so the shim costs the other boards no heap.

The pin that gates the rail powers every simulated part while it is an output at the rail's
on level, and nothing while it floats (an input, open-drain high, or the pad's reset state
after a chip reset: the switch's gate resistor keeps the rail off, as on the reference board's
P-MOSFET with its gate pull-up). Each change of the rail is one CONTROL ``power``
``[null, "off"|"on"]`` (``simulators.rig.LocalRig.power``: every part on the bus), posted
(``simlink.post``: it goes ahead of the next request, at the board's time then, with no round
trip of its own), so the parts lose their state and come up in their power-on state (the
models' ``reset_state`` and power-up time) when the real ones would; a stuck bus a part
holds (``released_by_power``) lets go with its power. Nothing is sent while the rail stays
as it is. ``Pin(id)`` on the rail's pad finds its mode and output level as the last ``Pin``
left them (one pad, as on the chip).

Resets: ``config`` wraps ``machine.deepsleep`` and ``machine._boot`` too. A deep sleep lets
the pad float, so the rail goes off as the board goes to sleep, unless the pin is held
(``Pin(..., hold=True)`` on an RTC GPIO keeps its level through deep sleep; a held pad
ignores changes until ``hold=False``). ``esp32.gpio_deep_sleep_hold`` (non-RTC pads) is not
modelled. Any other chip reset (power-on, watchdog, ``machine.reset``: the board boots at
the reset's own time) drops the rail as the board boots; a soft reboot keeps the pins.
"""

import machine
import simlink

_RTC_GPIOS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)  # REFERENCE §5
# [pin id, on level, pad mode, output level, held, powered (as last sent; None: not yet)]
_rail = [None, 1, None, 0, False, None]
_Pin = machine.Pin
_pin_new, _pin_init, _pin_drive, _pin_mode = _Pin.__init__, _Pin.init, _Pin._drive, _Pin.mode
_chip_deepsleep, _chip_boot = machine.deepsleep, machine._boot


def config(spec):
    """``spec`` "PIN" or "PIN:active_low": the rail's pin and on level; ``Pin`` wrapped for it.
    The rail is off (the pad in its reset state) until the firmware drives it. ``ValueError``
    for a malformed ``spec``."""
    pin, _, flag = spec.partition(":")
    if flag not in ("", "active_low") or not pin.isdigit():
        raise ValueError("--rail must be PIN or PIN:active_low, got %r" % (spec,))
    _rail[0:2] = [int(pin), 0 if flag else 1]
    _Pin.__init__, _Pin.init, _Pin._drive, _Pin.mode = _new, _init, _drive, _mode
    machine.deepsleep, machine._boot = _deepsleep, _boot


def _new(self, id, mode=-1, pull=-1, *, value=None, hold=None):
    _pin_new(self, id)
    if id == _rail[0]:  # one pad: its mode and output level go on
        self._mode, self._value = _rail[2], _rail[3]
    self.init(mode, pull, value=value, hold=hold)


def _init(self, mode=-1, pull=-1, *, value=None, hold=None):
    if self.id != _rail[0]:
        return _pin_init(self, mode, pull, value=value)
    if _rail[4] and hold is not False:
        return  # a held pad ignores changes until released
    _pin_init(self, mode, pull, value=value)
    if mode != -1 or pull != -1 or value is not None or hold is not None:
        _changed(self, hold)


def _drive(self, level):
    if self.id != _rail[0]:
        return _pin_drive(self, level)
    if not _rail[4]:  # (a held pad keeps its level)
        self._value = level
        _changed(self, None)


def _mode(self, mode=None):
    if mode is None or self.id != _rail[0]:
        return _pin_mode(self, mode)
    self.init(mode)


_ON = b'["power", [null, "on"]]'  # CONTROL power for every part on the bus (LocalRig.power)
_OFF = b'["power", [null, "off"]]'


def _power(on):
    if _rail[5] is not on:
        _rail[5] = on
        simlink.post(simlink.OP_CONTROL, _ON if on else _OFF)  # goes with the next request


def _changed(p, hold):
    """The rail's pad changed (``hold`` as given, or None): the rail is on while the pad drives
    the on level (open drain drives only low), off while it floats."""
    if hold is not None:
        _rail[4] = bool(hold)
    _rail[2], _rail[3] = p._mode, p._value
    out = p._mode == _Pin.OUT or (p._mode == _Pin.OPEN_DRAIN and p._value == 0)
    _power(out and p._value == _rail[1])


def reset(cause):
    """A reset (``cause``: the new reset cause; None, a soft reboot, changes nothing): the pad
    to its reset state and the rail off, but for a deep sleep with the pad held."""
    if cause is None or (cause == machine.DEEPSLEEP_RESET and _rail[4] and _rail[0] in _RTC_GPIOS):
        return
    _rail[2:5] = [None, 0, False]
    _power(False)


def _deepsleep(time_ms=None):
    reset(machine.DEEPSLEEP_RESET)  # as the board goes to sleep, at its time
    _chip_deepsleep(time_ms)


def _boot(cause, wake=0):
    if cause != machine.DEEPSLEEP_RESET:  # (a deep sleep dropped the rail as it began)
        reset(cause)
    _chip_boot(cause, wake)
