"""Simulators: byte-accurate I2C device models, physical environment models, the virtual
clock, fault injection, and the MicroPython ``machine`` shim (``simulators/mpy/``).

Everything here runs on one ``VirtualClock`` so a simulated day takes seconds and the same
seed gives the same values.
"""
