"""``SimI2CBus`` and the base of every simulated I2C device.

Theory of operation
-------------------
The bus implements the I2C contract of ``drivers.bus`` over device models attached by
address. A transaction costs wire time on the virtual clock (9 bit-times per byte plus the
address byte, at ``freq_hz``), so a driver that polls too fast sees the device still busy,
exactly as on a real bus.

A transaction goes: bus faults (a stuck bus times out) → the device's clock stretching
(longer than ``timeout_ms`` times out) → the device's address ACK (``nack`` faults, power,
busy windows: a model raises ``Nack``) → the model's ``on_write(data)`` / ``on_read(n)`` →
``crc_flip`` faults on the bytes read. ``Nack`` becomes ``OSError(errno.ENODEV)`` as on the
ESP32 port. A model meeting a command it does not know raises ``UnknownCommand``: that is
a bug in the host (or a gap in the model), never answered with made-up bytes.

Device models subclass ``SimI2CDevice`` and implement ``on_write`` and ``on_read``; they read
the physical truth through ``self.truth(quantity)`` and pass measured values through
``self.measure(quantity, value)`` so sensor faults (stuck, drift, spike) apply.
"""

import errno
import random

from simulators.faults import BUS_KINDS, DEVICE_KINDS, Fault


def _pure(src):
    """Whether ``src`` is an environment model's ``at`` (or the model): a pure function of
    wall time (``simulators.environment.base``), so one instant's values can be kept."""
    from simulators.environment.base import EnvironmentModel

    model = getattr(src, "__self__", src)
    return isinstance(model, EnvironmentModel) and src in (model, getattr(model, "at", None))


class Nack(Exception):
    """Raised by a device model to leave its address (or a data byte) un-ACKed."""


class UnknownCommand(Exception):
    """A device model was sent a command or register it does not implement."""


class SimI2CDevice:
    """Base class for a simulated I2C device.

    ``truth`` is where the device's physical inputs come from: a dict of constant values, or
    a callable ``truth(wall_s) -> dict`` (an environment model). ``seed`` makes the device's
    noise, offsets and faults repeatable. ``power_up_ms`` is how long after power-on the
    device NACKs its address.
    """

    power_up_ms = 0.0

    def __init__(self, address, truth=None, seed=0):
        self.address = address
        self.bus = None  # the SimI2CBus it is attached to (set by the bus)
        self.set_truth(truth if truth is not None else {})
        self.rng = random.Random(seed)
        self.seed = seed
        self.clock = None
        self.faults = []
        self.powered = True
        self._power_on_us = 0
        self.readings_since_power_on = 0
        self.counters = {"writes": 0, "reads": 0, "nacks": 0, "crc_flips": 0}

    # -- wiring ---------------------------------------------------------------------------
    def attach(self, clock):
        """Called by the bus: the device starts its life powered on at the current time."""
        self.clock = clock
        self._power_on_us = clock.now_us
        self.reset_state()

    def add_fault(self, fault):
        if fault.kind not in DEVICE_KINDS:
            raise ValueError("%r is a bus fault: add it to the bus" % (fault.kind,))
        self.faults.append(fault)
        return fault

    # -- power ----------------------------------------------------------------------------
    def power_off(self):
        """Cut the device's power (it NACKs until ``power_on``); a stuck bus it holds lets go
        (``SimI2CBus.power_lost``)."""
        self.powered = False
        if self.bus is not None:
            self.bus.power_lost(self.address)

    def power_on(self):
        """Power the device up: volatile state is lost, as on a real rail cycle."""
        self.powered = True
        self._power_on_us = self.clock.now_us
        self.readings_since_power_on = 0
        self.reset_state()

    def power_cycle(self):
        self.power_off()
        self.power_on()

    def ms_since_power_on(self):
        return (self.clock.now_us - self._power_on_us) / 1000.0

    # -- for models to override -----------------------------------------------------------
    def reset_state(self):
        """Put the model in its power-on state."""

    def on_write(self, data):
        raise NotImplementedError

    def on_read(self, n):
        raise NotImplementedError

    def stretch_ms(self):
        """Clock stretching this transaction (ms). Models that stretch add to the fault's."""
        return 0.0

    # -- helpers for models ----------------------------------------------------------------
    def now_s(self):
        return self.clock.now_us / 1e6

    def active_fault(self, kind, quantity=None):
        """The first fault of ``kind`` in its window whose probability roll succeeds, or None."""
        t = self.now_s()
        for f in self.faults:
            if f.kind == kind and f.in_window(t) and (quantity is None or f.applies_to(quantity)):
                if f.probability >= 1.0 or self.rng.random() < f.probability:
                    return f
        return None

    def truth(self, quantity):
        """The physical value of ``quantity`` now (before sensor error and faults).

        A pure environment model is asked once per instant (a reading takes several of its
        quantities at one wall time); any other callable (a fault's wrapper that draws from
        the rng) is called every time, as before."""
        src = self._truth
        if not callable(src):
            values = src
        else:
            t = self.clock.wall_s()
            if t == self._truth_at:
                values = self._truth_values
            else:
                values = src(t)
                if self._truth_pure:
                    self._truth_at, self._truth_values = t, values
        if quantity not in values:
            raise KeyError("truth for %s at 0x%02X has no %r" % (type(self).__name__, self.address, quantity))
        return values[quantity]

    def set_truth(self, truth):
        self._truth = truth
        self._truth_pure = callable(truth) and _pure(truth)
        self._truth_at = None  # the wall time (s) of ``_truth_values``, kept for a pure model
        self._truth_values = None

    def measure(self, quantity, value):
        """Apply sensor faults (stuck, drift, spike) to a measured ``value`` of ``quantity``."""
        if not self.faults:
            return value
        t = self.now_s()
        for f in self.faults:
            if not f.in_window(t) or not f.applies_to(quantity):
                continue
            if f.kind == "stuck_value":
                value = f.held.setdefault(quantity, value)
            elif f.kind == "drift":
                value = value + f.magnitude * (t - f.start_s) / 3600.0
            elif f.kind == "spike":
                if f.probability >= 1.0 or self.rng.random() < f.probability:
                    value = value + f.magnitude
        return value

    def garbage_reading(self):
        """True when this reading should be power-on garbage (fault), counting readings."""
        self.readings_since_power_on += 1
        return self.readings_since_power_on == 1 and self.active_fault("power_on_garbage") is not None

    # -- the bus side (not for models to override) -----------------------------------------
    def _check_ack(self):
        if not self.powered or self.ms_since_power_on() < self.power_up_ms:
            raise Nack("0x%02X is powered down or still booting" % self.address)
        if self.faults and self.active_fault("nack") is not None:
            raise Nack("0x%02X nack fault" % self.address)

    def _bus_write(self, data):
        self._check_ack()
        self.counters["writes"] += 1
        self.on_write(bytes(data))

    def _bus_read(self, n):
        self._check_ack()
        self.counters["reads"] += 1
        out = bytearray(self.on_read(n))
        if len(out) != n:
            raise AssertionError("%s returned %d bytes for a %d-byte read" % (type(self).__name__, len(out), n))
        if n and self.faults and self.active_fault("crc_flip") is not None:
            bit = self.rng.randrange(8 * n)
            out[bit // 8] ^= 0x80 >> (bit % 8)
            self.counters["crc_flips"] += 1
        return bytes(out)


class SimI2CBus:
    """A simulated I2C bus on a ``VirtualClock`` (the ``drivers.bus`` contract).

    ``timeout_ms`` is how long the master waits for a stretched clock or a stuck SDA before
    giving up (MicroPython's ESP32 default is 50 ms); ``freq_hz`` sets the wire time charged
    per byte.
    """

    def __init__(self, clock, freq_hz=100_000, timeout_ms=50.0):
        self.clock = clock
        self.freq_hz = freq_hz
        self.timeout_ms = float(timeout_ms)
        self.devices = {}
        self.faults = []
        self.counters = {"transactions": 0, "nacks": 0, "timeouts": 0, "recoveries": 0}

    def attach(self, device):
        if device.address in self.devices:
            raise ValueError("address 0x%02X is already taken on this bus" % device.address)
        self.devices[device.address] = device
        device.bus = self
        device.attach(self.clock)
        return device

    def detach(self, address):
        device = self.devices.pop(address)
        device.bus = None
        return device

    def move(self, old, new):
        """Re-key the device at ``old`` to ``new`` (a part that changes its own address).

        Two parts answering one address is a wiring fault the simulation refuses loudly.
        """
        if new in self.devices:
            raise RuntimeError("0x%02X -> 0x%02X: another simulated device is at 0x%02X; a real bus "
                               "would now have two parts answering one address" % (old, new, new))
        device = self.devices.pop(old)
        device.address = new
        self.devices[new] = device

    def add_fault(self, fault):
        if fault.kind not in BUS_KINDS:
            raise ValueError("%r is a device fault: add it to the device" % (fault.kind,))
        self.faults.append(fault)
        return fault

    def recover(self):
        """Bus recovery (9 SCL clocks then STOP): clears recoverable stuck-bus faults."""
        self.counters["recoveries"] += 1
        self.clock.advance_us(int(10 * 1e6 / self.freq_hz))
        for f in self.faults:
            if f.recoverable and f.in_window(self.clock.monotonic_s()):
                f.cleared = True

    def power_lost(self, address):
        """The device at ``address`` lost power: a ``stuck_bus`` fault in its window that a
        part holds (``released_by_power``) clears if that part was its ``holder`` or, with no
        holder named, once every device on the bus is off."""
        if not self.faults:
            return
        t = self.clock.monotonic_s()
        for f in self.faults:
            if f.released_by_power and f.in_window(t) and (
                    f.holder == address if f.holder is not None else
                    not any(d.powered for d in self.devices.values())):
                f.cleared = True

    # -- the I2C contract --------------------------------------------------------------------
    def writeto(self, addr, buf, stop=True):
        """Write ``buf`` to ``addr``; returns the number of bytes written."""
        return self._write(addr, bytes(buf))

    def _write(self, addr, data):
        dev = self._begin(addr, len(data))
        try:
            if data:
                dev._bus_write(data)
            else:  # an address-only write (a probe, as scan and i2cdetect send)
                dev._check_ack()
        except Nack:
            self._nack(dev)
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        """Read ``len(buf)`` bytes from ``addr`` into ``buf``."""
        self._read_into(addr, buf)

    def _read_into(self, addr, buf, restart=False):
        n = len(buf)
        dev = self._begin(addr, n, restart)
        try:
            data = dev._bus_read(n)
        except Nack:
            self._nack(dev)
        buf[:] = data

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        """Read ``len(buf)`` bytes of register ``memaddr`` (8-bit) from ``addr`` into ``buf``:
        one combined transaction (the register address written, a repeated START, the read).

        The models keep no state on a STOP (none is modelled: a write's effect is its
        ``on_write``), so this is the write phase then the read phase, each clocking its
        address byte and data bytes (a repeated START costs what the STOP and START it
        replaces would). A NACK in either phase raises ``OSError(ENODEV)`` and ends it.
        """
        if addrsize != 8 or not 0 <= memaddr <= 0xFF:
            raise ValueError("memaddr must be an 8-bit register address (addrsize 8), got %r/%r" % (memaddr, addrsize))
        self._write(addr, bytes((memaddr,)))
        self._read_into(addr, buf, restart=True)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
        return bytes(buf)

    def scan(self):
        """Addresses that ACK now (a stuck bus answers nothing)."""
        if self._stuck():
            return []
        found = []
        for addr in sorted(self.devices):
            self.clock.advance_us(int(9 * 1e6 / self.freq_hz))
            try:
                self.devices[addr]._check_ack()
                found.append(addr)
            except Nack:
                pass
        return found

    # -- internals ---------------------------------------------------------------------------
    def _stuck(self):
        if not self.faults:
            return False
        t = self.clock.monotonic_s()
        return any(f.kind == "stuck_bus" and f.in_window(t) for f in self.faults)

    def _timeout(self, why):
        self.counters["timeouts"] += 1
        self.clock.advance_us(int(self.timeout_ms * 1000))
        raise OSError(errno.ETIMEDOUT, why)

    def _nack(self, dev):
        self.counters["nacks"] += 1
        dev.counters["nacks"] += 1
        raise OSError(errno.ENODEV, "no ACK from 0x%02X" % dev.address)

    def _begin(self, addr, nbytes, restart=False):
        """One transaction's START (``restart``: a repeated START inside one, not counted
        again) up to the device's address ACK, with its wire time; returns the device."""
        if not restart:
            self.counters["transactions"] += 1
        if self._stuck():
            self._timeout("I2C bus stuck (SDA held low)")
        self.clock.advance_us(int((nbytes + 1) * 9 * 1e6 / self.freq_hz))
        dev = self.devices.get(addr)
        if dev is None:
            self.counters["nacks"] += 1
            raise OSError(errno.ENODEV, "no device at 0x%02X" % addr)
        stretch = dev.stretch_ms()
        fault = dev.active_fault("stretch") if dev.faults else None
        if fault is not None:
            stretch += fault.magnitude
        if stretch > self.timeout_ms:
            self._timeout("0x%02X stretched SCL for %.1f ms (timeout %.1f ms)" % (addr, stretch, self.timeout_ms))
        if stretch > 0:
            self.clock.advance_us(int(stretch * 1000))
        return dev


def add_faults(target, specs):
    """Attach fault specs (``Fault`` or dicts) to a bus or device; returns the Faults."""
    return [target.add_fault(s if isinstance(s, Fault) else Fault.from_spec(s)) for s in specs]
