"""``SMBus2I2C``: the I2C bus contract (``drivers.bus``) on a Raspberry Pi, over smbus2.

Each contract call is one ``i2c_rdwr`` transaction: of one ``i2c_msg`` (a plain write or a
plain read with START and STOP), which is what the Sensirion, TI and MaxBotix parts expect,
or, for ``readfrom_mem_into``, of a one-byte write message then a read message (the kernel
joins them with a repeated START); smbus2's byte/word helpers are not used because they add
a register byte the parts do not all want. A missing ACK surfaces as the kernel's
``OSError`` (``EREMOTEIO`` from the BCM2835 driver, ``ENXIO`` from some others); a stuck bus
as ``ETIMEDOUT``.
"""

import ctypes

from smbus2 import SMBus, i2c_msg

from drivers.bus import check_address

# i2cdetect's default probe: a read for these ranges (EEPROMs, some write-only-sensitive
# parts), an address-only write everywhere else.
_READ_PROBE_RANGES = ((0x30, 0x37), (0x50, 0x5F))


class SMBus2I2C:
    """The bus contract over an ``smbus2.SMBus``.

    ``bus`` is a bus number (``1`` for a Pi's GPIO 2/3 header pins, opened here) or an
    already-open ``SMBus``-like object with ``i2c_rdwr``.
    """

    def __init__(self, bus=1):
        self._owns = isinstance(bus, int)
        self._bus = SMBus(bus) if self._owns else bus

    def writeto(self, addr, buf, stop=True):
        """Write ``buf`` to ``addr`` in one transaction; returns the byte count."""
        data = bytes(buf)
        self._bus.i2c_rdwr(i2c_msg.write(check_address(addr), data))
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        """Read ``len(buf)`` bytes from ``addr`` into ``buf`` in one transaction."""
        msg = i2c_msg.read(check_address(addr), len(buf))
        self._bus.i2c_rdwr(msg)
        buf[:] = bytes(msg)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        """Read ``len(buf)`` bytes of register ``memaddr`` (8-bit) from ``addr`` into ``buf``
        in one combined transaction (write the register address, repeated START, read)."""
        if addrsize != 8 or not isinstance(memaddr, int) or not 0 <= memaddr <= 0xFF:
            raise ValueError("memaddr must be an 8-bit register address (addrsize 8), got %r/%r"
                             % (memaddr, addrsize))
        addr = check_address(addr)
        msg = i2c_msg.read(addr, len(buf))
        self._bus.i2c_rdwr(i2c_msg.write(addr, bytes((memaddr,))), msg)
        buf[:] = bytes(msg)

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def scan(self):
        """7-bit addresses 0x08..0x77 that ACK, probed as ``i2cdetect`` does."""
        found = []
        for addr in range(0x08, 0x78):
            read = any(lo <= addr <= hi for lo, hi in _READ_PROBE_RANGES)
            msg = i2c_msg.read(addr, 1) if read else i2c_msg.write(addr, b"")
            try:
                self._bus.i2c_rdwr(msg)
            except OSError:
                continue
            found.append(addr)
        return found

    def close(self):
        if self._owns:
            self._bus.close()


def copy_into_msg(msg, data):
    """Fill a read ``i2c_msg``'s buffer with ``data`` (what the kernel does for a read)."""
    if len(data) != msg.len:
        raise ValueError("data has %d bytes for a %d-byte read message" % (len(data), msg.len))
    ctypes.memmove(msg.buf, bytes(data), msg.len)
