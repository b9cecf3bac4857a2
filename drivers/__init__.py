"""Sensor and modem drivers shared by the ESP32 firmware (MicroPython) and the Pi gateway (CPython).

Each part has one module: pure command tables and conversions, plus a thin class that takes a
bus object (see ``drivers.bus``) and a clock object (see ``drivers.clock``). Nothing here
imports ``machine``, ``time`` or ``smbus2``: the composition root passes those in.
"""
