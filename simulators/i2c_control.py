"""The simulator socket's CONTROL op (``simulators/i2c_server.py`` documents the protocol):
``[method, [args...]]`` JSON dispatched to the hosted ``LocalRig`` or to the server's own
methods (the simulated WiFi access point, ADC pins, the connected boards, a fresh rig, the
board's UART peers)."""

import itertools
import json

from simulators.clock import VirtualClock
from simulators.rig import LocalRig

CONTROL_METHODS = ("wall", "setup", "fault", "clear_faults", "set_truth", "power", "recover", "counters",
                   "attr", "advance_s", "now_s")
SERVER_METHODS = ("reset", "wifi", "wifi_link", "analog", "nodes", "uart_peer", "uart_settle", "far_end")
WIFI_DEFAULTS = {"up": True, "ssid": None, "key": None, "assoc_ms": 1500, "scan_ms": 2000, "rssi": -60}
_GENERATIONS = itertools.count(1)


class AccessPoint(dict):
    """The access point's settings (a dict, as tests update it); ``generation`` changes at
    every change, so a board that keeps a copy knows when to read it again (the extended
    reply carries it, ``simulators/mpy/network.py``)."""

    def __init__(self, *args, **kw):
        dict.__init__(self, *args, **kw)
        self.generation = next(_GENERATIONS)

    def _changed(self):
        self.generation = next(_GENERATIONS)

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        self._changed()

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        self._changed()

    def update(self, *args, **kw):
        dict.update(self, *args, **kw)
        self._changed()

    def pop(self, *args):
        value = dict.pop(self, *args)
        self._changed()
        return value

    def setdefault(self, key, default=None):
        value = dict.setdefault(self, key, default)
        self._changed()
        return value

    def clear(self):
        dict.clear(self)
        self._changed()


class ProtocolError(Exception):
    """A request the server cannot parse or does not know (answered with ``ERROR``)."""


class ControlMethods:
    """``SimServer``'s CONTROL methods (a mixin: ``rig``, ``wifi``, ``analog``, ``nodes``
    and ``_reset_environment`` are the server's)."""

    def _control(self, payload):
        try:
            method, args = json.loads(payload.decode("utf-8"))
        except ValueError:
            raise ProtocolError("CONTROL payload must be JSON [method, [args...]], got %r" % (bytes(payload),)) from None
        if method in SERVER_METHODS:
            return getattr(self, "_control_" + method)(*args)
        if method not in CONTROL_METHODS:
            raise ProtocolError("unknown control method %r; known: %s" % (
                method, ", ".join(SERVER_METHODS + CONTROL_METHODS)))
        return getattr(self.rig, method)(*args)

    # -- the server's own CONTROL methods (see the module docstring) ---------------------------
    def _control_reset(self, clock_kwargs=None):
        self.rig = LocalRig(VirtualClock(**(clock_kwargs or {})))
        self._reset_environment()

    def _control_wifi(self, settings=None):
        for key, value in (settings or {}).items():
            if key not in WIFI_DEFAULTS:
                raise ValueError("wifi setting must be one of %s, got %r" % (", ".join(WIFI_DEFAULTS), key))
            if key == "up":
                value = bool(value)
                if value != self.wifi["up"]:
                    self.wifi["changed_us"] = self.rig.clock.now_us
            self.wifi[key] = value
        return dict(self.wifi)

    def _control_wifi_link(self, poll_us=0):
        self.rig.clock.advance_us(int(poll_us))
        return [self.rig.clock.now_us, self.wifi]

    def _control_analog(self, pin, volts=None):
        key = str(pin)
        if volts is not None:
            self.analog[key] = float(volts)
        if key not in self.analog:
            raise ValueError("no voltage set on ADC pin %r: set it with control analog [pin, volts]" % (pin,))
        return self.analog[key]

    def _control_far_end(self):
        """Whether the board's far end (its gateway) is up: True, False, or None (unknown).
        A board keeps waiting in real time, with no virtual time passing, for a far end that
        is up (``simlink.patient``)."""
        return self.far_end

    def _control_nodes(self):
        return [node.as_dict() for node in self.nodes.values()]

    def _peer(self, uart_id):
        return self.uart_peers.get(int(uart_id))

    def _control_uart_peer(self, uart_id):
        """``[consumed, emitted]`` byte counts of the peer on UART ``uart_id`` (bytes it has
        taken from the board and written for it, less what the board has still to read), or
        None when that UART has no peer that can settle."""
        peer = self._peer(uart_id)
        return None if peer is None else list(peer.uart_counts())

    def _control_uart_settle(self, uart_id, sent):
        """The peer on UART ``uart_id`` takes the ``sent`` bytes (the board's count, from
        ``uart_peer``'s ``consumed``) and writes all it has due by now: ``[emitted, due_us]``,
        its byte count and the time (µs as NOW) its next scheduled output is due (None:
        nothing scheduled). The board has everything the peer will say before ``due_us``
        once it has read up to ``emitted``, unless it writes again."""
        peer = self._peer(uart_id)
        if peer is None:
            raise ValueError("UART %r has no peer that can settle" % (uart_id,))
        return list(peer.uart_settle(int(sent)))
