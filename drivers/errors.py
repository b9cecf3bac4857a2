"""The drivers' error hierarchy.

- A missing ACK, a bus timeout or any other bus failure stays ``OSError`` (``errno.ENODEV``
  for a NACK on the ESP32 port, ``errno.ETIMEDOUT`` for a stuck bus): drivers never wrap it.
- A bad argument raises ``ValueError`` whose message names the argument.
- A reply that fails its checksum raises ``CRCError`` carrying both values.
- A well-formed reply that says the device is not what or where it should be (wrong device
  ID, failed self-test, a forced recalibration the sensor refused, info bytes instead of a
  range) raises ``DeviceError``; so does a command the part's state rules would refuse
  (e.g. a setting changed during periodic measurement), caught before it reaches the bus.

Runs on MicroPython and CPython.
"""


class DriverError(Exception):
    """Base class for errors that a device's reply (not the bus) causes."""


class CRCError(DriverError):
    """A data word's CRC did not match.

    ``expected`` is the CRC computed over the received data, ``received`` the CRC byte the
    device sent; ``word`` is the received data word (int).
    """

    def __init__(self, expected, received, word=None):
        self.expected = expected
        self.received = received
        self.word = word
        super().__init__(
            "CRC mismatch: expected 0x%02X, received 0x%02X (word 0x%04X)"
            % (expected, received, word if word is not None else 0)
        )


class DeviceError(DriverError):
    """The device answered, correctly framed, with something that means it failed, or the
    part's state rules refuse the command (the message says what to do first)."""
