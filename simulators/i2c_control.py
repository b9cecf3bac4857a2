"""The simulator socket's CONTROL op (``simulators/i2c_server.py`` documents the protocol):
``[method, [args...]]`` JSON dispatched to the hosted ``LocalRig`` or to the server's own
methods (the simulated WiFi access point, ADC pins, the connected boards, a fresh rig)."""

import json

from simulators.clock import VirtualClock
from simulators.rig import LocalRig

CONTROL_METHODS = ("wall", "setup", "fault", "clear_faults", "set_truth", "power", "recover", "counters",
                   "attr", "advance_s", "now_s")
SERVER_METHODS = ("reset", "wifi", "wifi_link", "analog", "nodes")
WIFI_DEFAULTS = {"up": True, "ssid": None, "key": None, "assoc_ms": 1500, "scan_ms": 2000, "rssi": -60}


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

    def _control_nodes(self):
        return [node.as_dict() for node in self.nodes.values()]
