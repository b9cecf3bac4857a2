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
        """The messages of one combined transaction: a one-byte write then a read of the same
        address is the bus's ``readfrom_mem_into`` (a repeated START between them); other
        messages go one by one."""
        msgs = list(i2c_msgs)
        while msgs:
            msg = msgs.pop(0)
            try:
                if msg.flags & I2C_M_RD:
                    buf = bytearray(msg.len)
                    self.sim_bus.readfrom_into(msg.addr, buf)
                    copy_into_msg(msg, buf)
                elif msg.len == 1 and msgs and msgs[0].flags & I2C_M_RD and msgs[0].addr == msg.addr:
                    read = msgs.pop(0)
                    buf = bytearray(read.len)
                    self.sim_bus.readfrom_mem_into(msg.addr, bytes(msg)[0], buf)
                    copy_into_msg(read, buf)
                else:
                    self.sim_bus.writeto(msg.addr, bytes(msg))
            except OSError as e:
                if e.errno == errno.ENODEV:
                    raise OSError(errno.EREMOTEIO, "Remote I/O error (no ACK from 0x%02X)" % msg.addr) from None
                raise
