"""``SimEchoDevice``: a tiny register-file device for testing the bus, the simulator socket
and the MicroPython ``machine`` shim (not a real part).

Protocol: a write is ``[reg, data...]``: it sets the register pointer to ``reg`` and stores
``data`` from there on, the pointer advancing per byte; a read returns bytes from the pointer
on, advancing it. A register outside ``0..size-1`` (set, written or read) raises
``UnknownCommand``, as a real model does for a command it does not implement. An address-only
write (no bytes) is ACKed and changes nothing. Registers hold ``initial`` after power-on.
"""

from simulators.i2c import SimI2CDevice, UnknownCommand


class SimEchoDevice(SimI2CDevice):
    def __init__(self, address=0x20, size=16, initial=None, truth=None, seed=0):
        super().__init__(address, truth=truth, seed=seed)
        if not 1 <= size <= 256:
            raise ValueError("size must be 1..256 registers, got %r" % (size,))
        initial = list(initial or [])
        if len(initial) > size:
            raise ValueError("initial has %d bytes for %d registers" % (len(initial), size))
        self.size = size
        self.initial = initial
        self.registers = []
        self.pointer = 0

    def reset_state(self):
        self.registers = self.initial + [0] * (self.size - len(self.initial))
        self.pointer = 0

    def _step(self):
        if self.pointer >= self.size:
            raise UnknownCommand("echo device 0x%02X has no register 0x%02X" % (self.address, self.pointer))
        reg = self.pointer
        self.pointer += 1
        return reg

    def on_write(self, data):
        if not data:
            return
        self.pointer = data[0]
        if self.pointer >= self.size:
            raise UnknownCommand("echo device 0x%02X has no register 0x%02X" % (self.address, self.pointer))
        for b in data[1:]:
            self.registers[self._step()] = b

    def on_read(self, n):
        return bytes(self.registers[self._step()] for _ in range(n))
