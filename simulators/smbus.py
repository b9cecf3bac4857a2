"""``SimSMBus``: an ``smbus2.SMBus`` whose ``i2c_rdwr`` runs on a ``SimI2CBus``.

It takes the same ``i2c_msg`` structures the kernel's I2C_RDWR ioctl would, so the Pi's
``gateway.i2c.SMBus2I2C`` adapter is tested byte for byte against the simulated devices.
Errors are those Linux i2c-dev gives: a NACK is ``EREMOTEIO``, a stuck bus ``ETIMEDOUT``.
"""

import errno

from smbus2 import SMBus
from smbus2.smbus2 import I2C_M_RD

from gateway.i2c import copy_into_msg


class SimSMBus(SMBus):
    def __init__(self, sim_bus):
        super().__init__(None)  # no /dev/i2c-N is opened
        self.sim_bus = sim_bus

    def i2c_rdwr(self, *i2c_msgs):
        for msg in i2c_msgs:
            try:
                if msg.flags & I2C_M_RD:
                    buf = bytearray(msg.len)
                    self.sim_bus.readfrom_into(msg.addr, buf)
                    copy_into_msg(msg, buf)
                else:
                    self.sim_bus.writeto(msg.addr, bytes(msg))
            except OSError as e:
                if e.errno == errno.ENODEV:
                    raise OSError(errno.EREMOTEIO, "Remote I/O error (no ACK from 0x%02X)" % msg.addr) from None
                raise
