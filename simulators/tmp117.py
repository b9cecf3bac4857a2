"""``SimTMP117``: a byte-accurate model of the TI TMP117 (REFERENCE §2.2, datasheet SNOSD82D).

Theory of operation
-------------------
Bus protocol (datasheet §7.5.2, §7.5.3): a write ``[ptr]`` sets the register pointer; a write
``[ptr, msb, lsb]`` sets the pointer and writes the register; a read of 1 or 2 bytes returns
the register at the pointer, MSB first. An address-only write changes nothing. A pointer the
part does not have, a 2-byte or >3-byte write, or a read of more than 2 bytes raises
``UnknownCommand``. Writes to read-only registers (Temp_Result, Device_ID) are ignored.

Power-on / soft reset (§7.3.1, Configuration bit 1): registers load from the EEPROM model
(factory: Configuration 0x0220, THigh 0x6000, TLow 0x8000, offset 0); Temp_Result reads
0x8000 until the first conversion ends; EEPROM_UL is 0 (locked). The part NACKs for 1.5 ms
after power-up and, as modelled here, for the 2 ms of a soft reset. An EEPROM holding one-shot
mode starts in shutdown (§7.4.3).

Conversions (state is computed lazily from the virtual clock at each bus access):

- continuous (MOD 00 or 10, reads back 00): a cycle starts at power-up/reset or when the host
  changes MOD, CONV or AVG; the result updates at the end of each active conversion, 15.5 ms
  per averaged sample (§7.3.2), and repeats every ``conversion_cycle_ms(CONV, AVG)`` (§7.4.1
  table). When many cycles pass unobserved, only the newest result is computed (values would
  differ only by noise: the truth is sampled at the observing access).
- shutdown (MOD 01): any conversion in progress is aborted (§7.4.2).
- one-shot (MOD 11): one conversion of 15.5 ms x AVG samples (CONV ignored, §7.4.3); MOD
  reads 11 while it runs and 01 (shutdown) after. Writing MOD 11 again restarts it.

At the end of a conversion: Temp_Result = quantised (truth + device error) + Temp_Offset
(saturating int16); Data_Ready is set; the alert flags update: alert mode (T/nA 0) latches
HIGH_Alert when result > THigh and LOW_Alert when result < TLow; therm mode sets HIGH_Alert
when result > THigh and clears it when result < TLow, LOW_Alert stays 0 (Configuration
register table). A read of Configuration clears Data_Ready and, in alert mode, both alert
flags; a read of Temp_Result clears Data_Ready.

Device error: a per-device offset of up to 40 % of the datasheet accuracy band at the
temperature (±0.1 °C −20…50, ±0.15 −40…70, ±0.2 −40…100, ±0.25 −55…125, ±0.3 beyond) plus
noise (σ 1 LSB, clipped ±3 LSB without averaging; σ 0.35 LSB, clipped ±1 LSB, with averaging:
§7.3.2 gives ±3 LSB and ±1 LSB repeatability), so every result is inside the band. Sensor
faults go through ``measure``; ``power_on_garbage`` makes the first conversion after power-on
random bits.

EEPROM (simplified but coherent, §7.5.1): writing EEPROM_UL bit 15 (EUN) unlocks. Locked,
writes change the registers only. Unlocked, a write to Configuration (bits 11:2), THigh,
TLow, Temp_Offset or EEPROM1–3 changes the register *and* programs its EEPROM cell, which sets
EEPROM_Busy (Configuration bit 12, mirrored in EEPROM_UL bit 14) for 7 ms; writes to those
registers while busy are ignored. EEPROM1–3 (48 general-purpose bits) hold a seeded
"factory" value. EEPROM contents survive power cycles and resets. Not modelled: the ALERT
pin, the SMBus alert response, general-call reset, the SMBus timeout (§7.5.3.1.7).
"""

from drivers.tmp117 import (
    CFG_DATA_READY, CFG_EEPROM_BUSY, CFG_HIGH_ALERT, CFG_LOW_ALERT, CFG_MOD_MASK, CFG_MOD_SHIFT,
    CFG_SOFT_RESET, CFG_THERM, CFG_WRITABLE, CONFIG_RESET, DEVICE_ID, EEPROM_PROGRAM_MS,
    EEPROM_UL_BUSY, EEPROM_UL_EUN, LSB_C, REG_CONFIGURATION, REG_DEVICE_ID, REG_EEPROM1,
    REG_EEPROM2, REG_EEPROM3, REG_EEPROM_UL, REG_TEMP_OFFSET, REG_TEMP_RESULT, REG_THIGH_LIMIT,
    REG_TLOW_LIMIT, REGISTERS, SOFT_RESET_MS, TEMP_RESULT_RESET, THIGH_RESET, TLOW_RESET,
    active_conversion_ms, check_tmp117_address, conversion_cycle_ms, decode_config, int16,
)
from simulators.i2c import Nack, SimI2CDevice, UnknownCommand

_EEPROM_BACKED = (REG_CONFIGURATION, REG_THIGH_LIMIT, REG_TLOW_LIMIT, REG_EEPROM1, REG_EEPROM2,
                  REG_TEMP_OFFSET, REG_EEPROM3)
_MOD_SHUTDOWN = 1
_MOD_ONE_SHOT = 3
# Accuracy bands (REFERENCE §2.1; ±0.3 °C −55…150 from the datasheet features list).
_BANDS = ((-20.0, 50.0, 0.1), (-40.0, 70.0, 0.15), (-40.0, 100.0, 0.2), (-55.0, 125.0, 0.25))
_BAND_OUTSIDE_C = 0.3


def accuracy_band_c(temperature_c):
    """The datasheet's maximum error (°C) at ``temperature_c``."""
    for lo, hi, band in _BANDS:
        if lo <= temperature_c <= hi:
            return band
    return _BAND_OUTSIDE_C


def _sat16(counts):
    return -32768 if counts < -32768 else 32767 if counts > 32767 else counts


class SimTMP117(SimI2CDevice):
    """A TMP117 at ``address`` (0x48..0x4B); truth key ``temperature_c``."""

    power_up_ms = 1.5  # datasheet §7.3.1: 1.5 ms to power up before conversions begin

    def __init__(self, address=0x48, truth=None, seed=0):
        check_tmp117_address(address)
        super().__init__(address, truth=truth, seed=seed)
        self.eeprom = {
            REG_CONFIGURATION: CONFIG_RESET, REG_THIGH_LIMIT: THIGH_RESET, REG_TLOW_LIMIT: TLOW_RESET,
            REG_TEMP_OFFSET: 0x0000, REG_EEPROM1: self.rng.getrandbits(16),
            REG_EEPROM2: self.rng.getrandbits(16), REG_EEPROM3: self.rng.getrandbits(16),
        }
        self.offset_fraction = self.rng.uniform(-0.4, 0.4)  # of the accuracy band
        self.regs = {}
        self.pointer = 0
        self.unlocked = False
        self._mod = 0
        self._cycle_start_us = 0
        self._done = 0
        self._one_shot_end_us = None
        self._eeprom_busy_until_us = 0
        self._nack_until_us = 0

    # -- state ------------------------------------------------------------------------------
    def reset_state(self):
        self._load(self.clock.now_us + int(self.power_up_ms * 1000))

    def _load(self, start_us):
        self.regs = {r: self.eeprom[r] for r in _EEPROM_BACKED}
        self.regs[REG_CONFIGURATION] &= CFG_WRITABLE
        self.regs[REG_TEMP_RESULT] = TEMP_RESULT_RESET
        self.pointer = 0
        self.unlocked = False
        self._eeprom_busy_until_us = 0
        self._nack_until_us = 0
        mod = (self.regs[REG_CONFIGURATION] & CFG_MOD_MASK) >> CFG_MOD_SHIFT
        if mod == _MOD_ONE_SHOT:  # §7.4.3: one-shot cannot be the start-up mode
            mod = _MOD_SHUTDOWN
        self._set_mod(mod, start_us)

    def _config(self):
        return decode_config(self.regs[REG_CONFIGURATION])

    def _set_mod(self, mod, start_us):
        if mod == 2:
            mod = 0  # "10: continuous conversion, reads back 00"
        self._mod = mod
        cfg = self.regs[REG_CONFIGURATION] & ~CFG_MOD_MASK
        self.regs[REG_CONFIGURATION] = cfg | (mod << CFG_MOD_SHIFT)
        self._cycle_start_us = start_us
        self._done = 0
        self._one_shot_end_us = None
        if mod == _MOD_ONE_SHOT:
            self._one_shot_end_us = start_us + int(active_conversion_ms(self._config()["averaging"]) * 1000)

    def _advance(self):
        """Complete the conversions that have ended by now."""
        now = self.clock.now_us
        if self._mod == 0:
            cfg = self._config()
            active_us = int(active_conversion_ms(cfg["averaging"]) * 1000)
            cycle_us = int(conversion_cycle_ms(cfg["conv"], cfg["averaging"]) * 1000)
            first = self._cycle_start_us + active_us
            if now >= first:
                n = (now - first) // cycle_us + 1
                if n > self._done:
                    self._done = n
                    self._convert()
        elif self._mod == _MOD_ONE_SHOT and now >= self._one_shot_end_us:
            self._convert()
            self._set_mod(_MOD_SHUTDOWN, now)

    def _convert(self):
        cfg = self._config()
        if self.garbage_reading():
            counts = int16(self.rng.getrandbits(16))
        else:
            t = self.measure("temperature_c", self.truth("temperature_c"))
            sigma, clip = (1.0, 3.0) if cfg["averaging"] == 1 else (0.35, 1.0)
            noise = max(-clip, min(clip, self.rng.gauss(0.0, sigma))) * LSB_C
            value = t + self.offset_fraction * accuracy_band_c(t) + noise
            counts = _sat16(int(round(value / LSB_C)))
        counts = _sat16(counts + int16(self.regs[REG_TEMP_OFFSET]))
        self.regs[REG_TEMP_RESULT] = counts & 0xFFFF
        flags = CFG_DATA_READY
        high = counts > int16(self.regs[REG_THIGH_LIMIT])
        low = counts < int16(self.regs[REG_TLOW_LIMIT])
        word = self.regs[REG_CONFIGURATION]
        if word & CFG_THERM:
            if high:
                flags |= CFG_HIGH_ALERT
            elif low:
                word &= ~CFG_HIGH_ALERT
            word &= ~CFG_LOW_ALERT
        else:
            if high:
                flags |= CFG_HIGH_ALERT
            if low:
                flags |= CFG_LOW_ALERT
        self.regs[REG_CONFIGURATION] = word | flags

    def _eeprom_busy(self):
        return self.clock.now_us < self._eeprom_busy_until_us

    def _read_word(self, reg):
        if reg == REG_DEVICE_ID:
            return DEVICE_ID
        if reg == REG_CONFIGURATION:
            word = self.regs[REG_CONFIGURATION]
            clear = CFG_DATA_READY if word & CFG_THERM else CFG_DATA_READY | CFG_HIGH_ALERT | CFG_LOW_ALERT
            self.regs[REG_CONFIGURATION] = word & ~clear
            return word | (CFG_EEPROM_BUSY if self._eeprom_busy() else 0)
        if reg == REG_EEPROM_UL:
            return (EEPROM_UL_EUN if self.unlocked else 0) | (EEPROM_UL_BUSY if self._eeprom_busy() else 0)
        if reg == REG_TEMP_RESULT:
            self.regs[REG_CONFIGURATION] &= ~CFG_DATA_READY
        return self.regs[reg]

    def _write_word(self, reg, word):
        now = self.clock.now_us
        if reg in (REG_TEMP_RESULT, REG_DEVICE_ID):
            return  # read-only: ignored
        if reg == REG_EEPROM_UL:
            self.unlocked = bool(word & EEPROM_UL_EUN)
            return
        if self._eeprom_busy():
            return  # modelled: a write while the EEPROM programs is ignored
        if reg == REG_CONFIGURATION:
            if word & CFG_SOFT_RESET:
                self._load(now + SOFT_RESET_MS * 1000)
                self._nack_until_us = now + SOFT_RESET_MS * 1000
                return
            old = self.regs[REG_CONFIGURATION]
            new = (old & (CFG_HIGH_ALERT | CFG_LOW_ALERT | CFG_DATA_READY)) | (word & CFG_WRITABLE)
            self.regs[REG_CONFIGURATION] = new
            mod = (word & CFG_MOD_MASK) >> CFG_MOD_SHIFT
            timing = CFG_MOD_MASK | 0x03E0  # MOD, CONV, AVG
            if (old ^ new) & timing or mod == _MOD_ONE_SHOT:
                self._set_mod(mod, now)
            value = word & CFG_WRITABLE
        else:
            self.regs[reg] = word
            value = word
        if self.unlocked:
            self.eeprom[reg] = value
            self._eeprom_busy_until_us = now + EEPROM_PROGRAM_MS * 1000

    # -- the bus side -------------------------------------------------------------------------
    def _check_reset(self):
        if self.clock.now_us < self._nack_until_us:
            raise Nack("TMP117 0x%02X is in its 2 ms soft reset" % self.address)

    def on_write(self, data):
        self._check_reset()
        if not data:
            return
        reg = data[0]
        if reg not in REGISTERS:
            raise UnknownCommand("TMP117 0x%02X has no register 0x%02X" % (self.address, reg))
        if len(data) not in (1, 3):
            raise UnknownCommand("TMP117 0x%02X: a write is a pointer (1 byte) or pointer + 16-bit word "
                                 "(3 bytes), got %d bytes" % (self.address, len(data)))
        self._advance()
        self.pointer = reg
        if len(data) == 3:
            self._write_word(reg, (data[1] << 8) | data[2])

    def on_read(self, n):
        self._check_reset()
        if n > 2:
            raise UnknownCommand("TMP117 0x%02X: registers are 16-bit; a %d-byte read is not "
                                 "defined" % (self.address, n))
        self._advance()
        word = self._read_word(self.pointer)
        return bytes((word >> 8, word & 0xFF))[:n]
