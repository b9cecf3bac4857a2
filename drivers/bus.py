"""The I2C bus contract every driver is written against.

A bus object has the subset of MicroPython's ``machine.I2C`` that the drivers use:

``writeto(addr, buf)``
    One write transaction: START, ``addr`` (7-bit) + W, the bytes of ``buf``, STOP.
``readfrom_into(addr, buf)``
    One read transaction: START, ``addr`` + R, ``len(buf)`` bytes into ``buf``, STOP.
``readfrom_mem_into(addr, memaddr, buf)``
    One combined transaction: START, ``addr`` + W, the 8-bit register address ``memaddr``,
    repeated START, ``addr`` + R, ``len(buf)`` bytes into ``buf``, STOP (MicroPython's own
    ``machine.I2C.readfrom_mem_into``, ``addrsize`` 8). A pointer-register part's register
    read in one call; a NACK in either phase raises as below.
``scan()``
    The list of 7-bit addresses that ACK.

Any other write followed by a read is the two calls in turn, with STOP between them. A
missing ACK raises ``OSError`` (``errno.ENODEV`` on the ESP32 port; ``EREMOTEIO``/``ENXIO``
from Linux i2c-dev); a bus that does not release in time raises ``OSError`` with
``errno.ETIMEDOUT``. Compare ``errno`` names, never numbers.

Implementations: ``machine.I2C`` on the ESP32; ``gateway.i2c.SMBus2I2C`` on a Raspberry Pi;
``simulators.i2c.SimI2CBus`` in CPython simulations; ``simulators/mpy/machine.py``'s ``I2C``
(a socket to ``simulators.i2c_server``) under the MicroPython unix port.
"""


def check_address(addr):
    """Raise ``ValueError`` unless ``addr`` is a usable 7-bit address (0x08..0x77)."""
    if not isinstance(addr, int) or addr < 0x08 or addr > 0x77:
        raise ValueError("address must be a 7-bit I2C address 0x08..0x77, got %r" % (addr,))
    return addr
