"""``SimADS1115``: a TI ADS1115 16-bit ADC on the simulated I2C bus.

Datasheet behaviour modelled (REFERENCE.md §3.1; TI SBAS444 §9.4 where noted):

- Registers: Conversion 0x00 (read-only, 0 after power-up until the first conversion),
  Config 0x01 (reset 0x8583), Lo_thresh 0x02 (0x8000), Hi_thresh 0x03 (0x7FFF). Write =
  ptr, MSB, LSB; a 1-byte write only sets the pointer, which reads then use (remembered
  until the next write or a power cycle). Any pointer above 3, or a write of 2 or more than
  3 bytes, or a read of more than 2 bytes, raises ``UnknownCommand``. A write to the
  read-only Conversion register is ignored, as by the chip.
- Single-shot (MODE=1, power-on default): writing OS=1 while powered down starts one
  conversion; the device wakes (25 µs, SBAS444 §9.4.2.1), converts for 1/DR, then powers
  down. OS reads 0 while converting, 1 when idle. Writing OS=1 during a conversion has no
  effect. The Conversion register keeps the previous result until the new one is done.
- Continuous (MODE=0): back-to-back conversions every 1/DR; a new configuration takes
  effect after the conversion in progress (SBAS444 §9.4.2.2). OS reads 0 throughout (the
  device is always converting). Writing MODE=1 stops after the conversion in progress.
- Timing: the internal oscillator sets the data rate; each chip's error is drawn (seeded)
  within the datasheet's ±10 % data-rate variation (``data_rate_error``, σ 3 %).
- Conversion: V(AINp) − V(AINn) for the MUX setting, at the PGA's FSR, rounded and
  clipped to −32768..32767 (``drivers.ads1115.v_to_raw``: one module owns the
  conversion). Per-chip offset (±1 LSB) and gain error (±0.01 %) are drawn within the
  datasheet's typical values; noise is Gaussian, σ = 0.5 LSB up to 128 SPS rising to
  1.5 LSB at 860 SPS (an assumption: REFERENCE.md does not carry TI's noise table).
  A single-shot conversion samples its inputs when it starts; continuous ones when the
  result is next looked at (the register only ever holds the latest).

``inputs`` describes what is wired to AIN0..AIN3 (JSON-able; keys "0".."3" or ints)::

    {"0": 1.2}                          AIN0 held at 1.2 V
    {"2": "vbat_v"}                     AIN2 follows truth quantity "vbat_v" (volts)
    {"electrode": {...}, "we": 0, "ae": 1}
        an Alphasense NO2-B43F on an ISB (``simulators.no2b43f.SimNO2B43F`` keyword
        arguments; its seed defaults to this ADC's): OP1 (WE) on AIN0, OP2 (AE) on AIN1,
        driven by truth "no2_ppb" and "temperature_c".

Unwired inputs read as tied to GND (0 V). ``electrode_sheet`` is the simulated sensor's
calibration sheet (``drivers.no2b43f.Calibration.from_sheet`` accepts it). Sensor faults
(stuck, drift, spike) apply to the pin voltages, quantities "ain0_v".."ain3_v" (volts).
"""

from drivers.ads1115 import (
    ADDRESSES,
    CONFIG_RESET,
    HI_THRESH_RESET,
    LO_THRESH_RESET,
    WAKE_US,
    decode_config,
    lsb_v,
    mux_code,
    v_to_raw,
)
from simulators.i2c import SimI2CDevice, UnknownCommand
from simulators.no2b43f import SimNO2B43F

_OS = 0x8000
_MODE = 0x0100
# MUX code -> (positive pin, negative pin or None for GND), REFERENCE §3.1.
_MUX_PINS = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))
_NOISE_LSB = {8: 0.5, 16: 0.5, 32: 0.5, 64: 0.5, 128: 0.5, 250: 0.7, 475: 1.0, 860: 1.5}

# The street-NO2 wiring: electrode WE on AIN0, AE on AIN1.
NO2_ISB_INPUTS = {"electrode": {}, "we": 0, "ae": 1}


def _parse_inputs(inputs):
    """pin -> ("v", volts) | ("truth", quantity) | ("we",) | ("ae",); electrode kwargs."""
    wiring = {}
    electrode = None
    if inputs is None:
        return wiring, electrode
    if not isinstance(inputs, dict):
        raise ValueError("inputs must be a dict (see simulators.ads1115), got %r" % (inputs,))

    def pin_of(key, value):
        if isinstance(value, bool) or value not in (0, 1, 2, 3):
            raise ValueError("inputs[%r] must be an AIN pin 0..3, got %r" % (key, value))
        if value in wiring:
            raise ValueError("inputs: AIN%d is wired twice" % value)
        return value

    for key, value in inputs.items():
        if key == "electrode":
            if not isinstance(value, dict):
                raise ValueError("inputs['electrode'] must be a dict of SimNO2B43F arguments")
            electrode = dict(value)
        elif key in ("we", "ae"):
            continue
        elif str(key) in ("0", "1", "2", "3"):
            pin = pin_of(key, int(key))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                wiring[pin] = ("v", float(value))
            elif isinstance(value, str):
                wiring[pin] = ("truth", value)
            else:
                raise ValueError("inputs[%r] must be volts or a truth quantity name, got %r"
                                 % (key, value))
        else:
            raise ValueError("inputs: unknown key %r (use \"0\"..\"3\", \"electrode\", \"we\", \"ae\")"
                             % (key,))
    if electrode is not None:
        wiring[pin_of("we", inputs.get("we", 0))] = ("we",)
        wiring[pin_of("ae", inputs.get("ae", 1))] = ("ae",)
    elif "we" in inputs or "ae" in inputs:
        raise ValueError("inputs: 'we'/'ae' given without an 'electrode'")
    return wiring, electrode


class SimADS1115(SimI2CDevice):
    """ADS1115 model. ``address`` 0x48..0x4B; ``inputs`` as the module doc; ``seed`` draws
    the chip's oscillator, offset and gain errors and its noise; ``data_rate_error``
    (fraction within ±0.1; +0.05 = oscillator 5 % fast, conversions 5 % shorter; -0.1 =
    the slowest chip the datasheet allows) overrides the drawn oscillator error."""

    def __init__(self, address=0x48, inputs=None, seed=0, truth=None, data_rate_error=None):
        if address not in ADDRESSES:
            raise ValueError("address must be 0x48..0x4B (ADDR pin), got %r" % (address,))
        super().__init__(address, truth, seed)
        self.inputs = inputs
        self._wiring, electrode = _parse_inputs(inputs)
        self.electrode = None
        self.electrode_sheet = None
        if electrode is not None:
            electrode.setdefault("seed", seed)
            self.electrode = SimNO2B43F(**electrode)
            self.electrode_sheet = dict(self.electrode.calibration_sheet)
        if data_rate_error is None:
            data_rate_error = max(-0.1, min(0.1, self.rng.gauss(0.0, 0.03)))
        if not isinstance(data_rate_error, (int, float)) or not -0.1 <= data_rate_error <= 0.1:
            raise ValueError("data_rate_error must be within -0.1..0.1 (datasheet ±10 %%), got %r"
                             % (data_rate_error,))
        self.data_rate_error = float(data_rate_error)  # + = oscillator fast, shorter conversions
        self.offset_lsb = self.rng.uniform(-1.0, 1.0)
        self.gain_error = self.rng.uniform(-1e-4, 1e-4)
        self.counters["conversions"] = 0

    def reset_state(self):
        self.pointer = 0
        self.config = CONFIG_RESET & ~_OS  # stored without OS: OS is read as the status
        self.lo_thresh = LO_THRESH_RESET
        self.hi_thresh = HI_THRESH_RESET
        self.conversion = 0
        self._busy_until_us = None  # end of the conversion in progress
        self._job = None  # (mux code, fsr_v, sps, raw or None) of that conversion

    # -- timing ------------------------------------------------------------------------------
    def conversion_us(self, data_rate_sps):
        """This chip's conversion time in µs at ``data_rate_sps`` (oscillator error included)."""
        return int(round(1e6 / (data_rate_sps * (1.0 + self.data_rate_error))))

    def _job_from(self, config, sample_now):
        f = decode_config(config | _OS)
        mux = mux_code(f["mux"])
        raw = self._convert(mux, f["fsr_v"], f["data_rate_sps"]) if sample_now else None
        return (mux, f["fsr_v"], f["data_rate_sps"], raw)

    def _advance(self):
        """Complete every conversion that has ended by now (at most two computed)."""
        now = self.clock.now_us
        while self._busy_until_us is not None and self._busy_until_us <= now:
            mux, fsr_v, sps, raw = self._job
            self.conversion = raw if raw is not None else self._convert(mux, fsr_v, sps)
            end = self._busy_until_us
            if self.config & _MODE:  # single-shot: power down
                self._busy_until_us = None
                self._job = None
                continue
            job = self._job_from(self.config, sample_now=False)
            period = self.conversion_us(job[2])
            nxt = end + period
            if nxt + period <= now:  # skip results overwritten before anyone could read them
                nxt += ((now - nxt) // period) * period
            self._job = job
            self._busy_until_us = nxt

    # -- conversion ---------------------------------------------------------------------------
    def _pin_v(self, pin, electrode_v):
        w = self._wiring.get(pin)
        if w is None:
            v = 0.0
        elif w[0] == "v":
            v = w[1]
        elif w[0] == "truth":
            v = float(self.truth(w[1]))
        else:
            v = electrode_v[0] if w[0] == "we" else electrode_v[1]
        return self.measure("ain%d_v" % pin, v)

    def _convert(self, mux, fsr_v, sps):
        self.counters["conversions"] += 1
        pos, neg = _MUX_PINS[mux]
        electrode_v = None
        if self.electrode is not None:
            used = [self._wiring.get(p, ("",))[0] for p in (pos, neg) if p is not None]
            if "we" in used or "ae" in used:
                electrode_v = self.electrode.voltages_v(self.truth("no2_ppb"), self.truth("temperature_c"))
        v = self._pin_v(pos, electrode_v)
        if neg is not None:
            v -= self._pin_v(neg, electrode_v)
        lsb = lsb_v(fsr_v)
        v = v * (1.0 + self.gain_error) + lsb * (self.offset_lsb + self.rng.gauss(0.0, _NOISE_LSB[sps]))
        if self.garbage_reading():
            return self.rng.randrange(-32768, 32768)
        return v_to_raw(v, fsr_v)

    # -- registers -----------------------------------------------------------------------------
    def _write_config(self, value):
        self._advance()
        self.config = value & ~_OS
        if self._busy_until_us is not None:
            return  # OS=1 ignored while converting; new settings apply to the next conversion
        if value & _MODE and not value & _OS:
            return  # single-shot, no start: stays powered down
        job = self._job_from(self.config, sample_now=bool(value & _MODE))
        self._job = job
        self._busy_until_us = self.clock.now_us + WAKE_US + self.conversion_us(job[2])

    def _register(self, pointer):
        if pointer == 0:
            return self.conversion & 0xFFFF
        if pointer == 1:
            return self.config | (0 if self._busy_until_us is not None else _OS)
        return self.lo_thresh if pointer == 2 else self.hi_thresh

    def on_write(self, data):
        if not data:
            return  # address-only probe
        ptr = data[0]
        if ptr > 3:
            raise UnknownCommand("ADS1115 has no register pointer 0x%02X (0..3)" % ptr)
        if len(data) == 1:
            self.pointer = ptr
            return
        if len(data) != 3:
            raise UnknownCommand("ADS1115 register writes are ptr, MSB, LSB; got %d bytes" % len(data))
        self.pointer = ptr
        value = (data[1] << 8) | data[2]
        if ptr == 1:
            self._write_config(value)
        elif ptr == 2:
            self.lo_thresh = value
        elif ptr == 3:
            self.hi_thresh = value
        # ptr 0: Conversion is read-only; the chip ignores the data.

    def on_read(self, n):
        if n > 2:
            raise UnknownCommand("ADS1115 registers are 2 bytes; a %d-byte read is not modelled" % n)
        self._advance()
        value = self._register(self.pointer)
        return bytes((value >> 8, value & 0xFF))[:n]

    # -- for tests ---------------------------------------------------------------------------
    def busy_until_us(self):
        """When the conversion in progress ends (virtual µs), or None when powered down."""
        self._advance()
        return self._busy_until_us

