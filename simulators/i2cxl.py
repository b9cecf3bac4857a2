"""``SimMaxSonar``: a byte-accurate model of the MaxBotix I2CXL-MaxSonar rangefinders
(MB1202/1212/1222/1232/1242, MB7040), after REFERENCE §4 and datasheet PD11848k pp. 2–3.

Theory of operation
-------------------
- Write ``[0x51]``: take a range reading. The model samples the truth now and is busy for
  22 ms + the echo's round trip (≤ 67 ms at 765 cm and 20 °C; the datasheet's "up to 40 Hz
  for close targets, 15 Hz full range"), always inside the ~80 ms the datasheet tells the host
  to wait. While busy the status pin is high and "I2C communications are ignored" (p. 2): every
  transaction is NACKed.
- Read (1 or 2 bytes): the range of the last reading in cm, MSB first; reading again repeats
  it. Before the first range command after power-up the part returns "two part info bytes"
  (p. 3) whose content MaxBotix does not publish: this model returns the part number's last
  four digits as BCD (MB1242 → 0x12 0x42; MB7040 → 0x70 0x40), which decode to more than
  765 cm and so can never pass for a range.
- Write ``[0xAA, 0xA5, a8]``: change address. An odd ``a8`` is rounded down to even; 0, 80,
  164 and 170 are ignored (p. 3). The model then answers at ``a8 >> 1`` at once and keeps it
  across power cycles (stored in EEPROM; the pin-1 address reset is not modelled).
- Any other write (except an address-only probe) raises ``UnknownCommand``; so does a read of
  more than 2 bytes (not documented).
- Power-up: the datasheet gives no boot time for the I2CXL ("fast first reading after
  power-up"), so the model answers at once.
- Every transaction stretches SCL by 0.05 ms (the part needs clock stretching above 50 kHz,
  p. 2); a ``stretch`` fault adds to it.

Range physics: the part times the echo and converts with the speed of sound at 22.5 °C
(``drivers.binfill``: MaxBotix XL parts assume 22.5 °C; no compensation, REFERENCE §4), so it
reports ``reported_cm_for(distance_cm, temperature_c)``; then seeded noise (0 or ±0.6 cm) and
rounding to the 1 cm resolution (error ≤ 1.1 cm), clamped to the model's minimum (25 cm for the MB1242 per
REFERENCE §4, 20 cm for the others; closer targets read as the minimum) and 765 cm (no echo
inside the range reads 765). A ping within 100 ms of the previous one may catch the previous
ping's ring-down (the datasheet's reason for 100 ms spacing): with probability 0.3 it reports
a ghost between the minimum and the true range. Truth keys: ``distance_cm`` and
``temperature_c`` (air; 22.5 °C if absent).

Moving on the bus: the model re-keys itself on its bus with ``SimI2CBus.move``.
"""


from drivers.binfill import CALIBRATION_TEMPERATURE_C, reported_cm_for, speed_of_sound_m_s
from drivers.i2cxl import (
    CMD_ADDR_UNLOCK_1, CMD_ADDR_UNLOCK_2, CMD_RANGE, INVALID_ADDRESSES_8BIT, MAX_RANGE_CM, RING_DOWN_MS,
)
from simulators.i2c import Nack, SimI2CBus, SimI2CDevice, UnknownCommand

MIN_RANGE_CM = {"MB1202": 20, "MB1212": 20, "MB1222": 20, "MB1232": 20, "MB1242": 25, "MB7040": 20}
BASE_BUSY_MS = 22.0  # + echo round trip: 25 ms close (40 Hz), ~67 ms full range (15 Hz)
STRETCH_MS = 0.05
GHOST_PROBABILITY = 0.3


class SimMaxSonar(SimI2CDevice):
    """An I2CXL-MaxSonar ``model`` (or ``part``) at 7-bit ``address`` (default 0x70)."""

    def __init__(self, address=0x70, truth=None, seed=0, model="MB1242", part=None):
        # A registry spec's "model" key names the simulator ("i2cxl"), so specs choose the
        # part with "part"; direct construction may use ``model`` as well.
        if part is not None:
            model = part
        if model not in MIN_RANGE_CM:
            raise ValueError("model (part) must be one of %s, got %r" % (", ".join(sorted(MIN_RANGE_CM)), model))
        super().__init__(address, truth=truth, seed=seed)
        self.model = model
        self.min_cm = MIN_RANGE_CM[model]
        digits = model[2:]
        self.info_bytes = bytes((int(digits[:2], 16), int(digits[2:], 16)))
        self.output = self.info_bytes
        self.busy_until_us = 0
        self.last_ping_us = None
        self.ranges_taken = 0

    def reset_state(self):
        self.output = self.info_bytes
        self.busy_until_us = 0
        self.last_ping_us = None

    # -- physics -------------------------------------------------------------------------------
    def _air_c(self):
        try:
            return self.truth("temperature_c")
        except KeyError:
            return CALIBRATION_TEMPERATURE_C

    def _take_range(self, now_us):
        true_cm = float(self.measure("distance_cm", self.truth("distance_cm")))
        air_c = self._air_c()
        if self.garbage_reading():
            cm = self.rng.randrange(0, 0x10000)
        else:
            cm = reported_cm_for(max(true_cm, 0.0), air_c) + self.rng.choice((-1, 0, 0, 0, 1)) * 0.6
            if self.last_ping_us is not None and now_us - self.last_ping_us < RING_DOWN_MS * 1000 \
                    and self.rng.random() < GHOST_PROBABILITY:
                cm = self.rng.uniform(self.min_cm, max(self.min_cm, cm))
            cm = int(round(cm))
            cm = self.min_cm if cm < self.min_cm else MAX_RANGE_CM if cm > MAX_RANGE_CM else cm
        self.output = bytes(((cm >> 8) & 0xFF, cm & 0xFF))
        echo_cm = min(max(true_cm, 0.0), float(MAX_RANGE_CM))
        tof_ms = 2 * echo_cm / 100.0 / speed_of_sound_m_s(air_c) * 1000.0
        self.busy_until_us = now_us + int((BASE_BUSY_MS + tof_ms) * 1000)
        self.last_ping_us = now_us
        self.ranges_taken += 1

    # -- addressing ----------------------------------------------------------------------------
    def _change_address(self, addr8):
        addr8 &= 0xFE  # datasheet p. 3: an odd address is set to the next lowest even number
        if addr8 in INVALID_ADDRESSES_8BIT:
            return  # datasheet p. 3: the sensor ignores the command and keeps its address
        new = addr8 >> 1
        if new == self.address:
            return
        self.bus.move(self.address, new)

    # -- the bus side -------------------------------------------------------------------------
    def stretch_ms(self):
        return STRETCH_MS

    def _check_busy(self):
        if self.clock.now_us < self.busy_until_us:
            raise Nack("I2CXL 0x%02X is ranging (status pin high, I2C ignored)" % self.address)

    def on_write(self, data):
        self._check_busy()
        if not data:
            return
        if len(data) == 1 and data[0] == CMD_RANGE:
            self._take_range(self.clock.now_us)
        elif len(data) == 3 and data[0] == CMD_ADDR_UNLOCK_1 and data[1] == CMD_ADDR_UNLOCK_2:
            self._change_address(data[2])
        else:
            raise UnknownCommand("I2CXL 0x%02X: unknown command bytes %s (range is [0x51]; address change "
                                 "is [0xAA, 0xA5, addr8])" % (self.address, bytes(data).hex()))

    def on_read(self, n):
        self._check_busy()
        if n > 2:
            raise UnknownCommand("I2CXL 0x%02X: a %d-byte read is not documented (the range is 2 bytes)"
                                 % (self.address, n))
        return self.output[:n]
