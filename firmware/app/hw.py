"""The board's pins for the composition root (``app.main``) and the self-test: I2C buses and
their recovery, the switched sensor rail, the link's UART, the battery ADC. The sampler and the
drivers get these as callables and bus objects, never ``machine`` itself.

Stuck bus, escalating (RELIABILITY.md, "SDA stuck low / bus timeout"): ``bus_recovery``'s
``recover(bus_id)`` is the I2C-bus specification's recovery for a slave holding SDA low — nine
SCL clocks as a GPIO, a STOP, the peripheral re-initialised; ``Rail.cycle`` is the next step
when the bus stays stuck: the switched sensor rail off for ``off_ms`` (SDA/SCL released to
inputs meanwhile, so the ESP32 does not back-power the parts through its I2C pins — the
profiles' wiring notes), on again, ``settle_ms`` for the parts to come up, and the buses
re-initialised. Every part on the rail has then lost its state: the sampler brings each up
again (``app.sensors``). The watchdog stays the last resort. Runs on MicroPython only.
"""

import machine


def _i2c(b):
    # the ESP32 port returns the same object per bus id and re-initialises the peripheral
    return machine.I2C(b["id"], scl=machine.Pin(b["scl_pin"]), sda=machine.Pin(b["sda_pin"]),
                       freq=b["freq_hz"], timeout=b["timeout_us"])


def make_buses(cfg):
    """``{bus id: machine.I2C}`` for the configuration's ``i2c`` list."""
    buses = {}
    for b in cfg["i2c"]:
        buses[b["id"]] = _i2c(b)
    return buses


def bus_recovery(cfg):
    """``recover(bus_id)``: nine SCL clocks as a GPIO, a STOP, then the peripheral
    re-initialised (the I2C-bus specification's recovery for a slave holding SDA low)."""
    by_id = {}
    for b in cfg["i2c"]:
        by_id[b["id"]] = b

    def recover(bus_id):
        b = by_id[bus_id]
        od = machine.Pin.OPEN_DRAIN
        scl = machine.Pin(b["scl_pin"], od, value=1)
        sda = machine.Pin(b["sda_pin"], od, value=1)
        for _ in range(9):
            scl.value(0)
            scl.value(1)
        sda.value(0)  # STOP: SDA rises while SCL is high
        sda.value(1)
        _i2c(b)

    return recover


class Rail:
    """The switched sensor rail (``cfg["rail"]``: ``pin``, ``active_low``, ``settle_ms``,
    ``off_ms``). ``sleep_ms(ms)`` waits (the sensor clock: a battery node light-sleeps)."""

    def __init__(self, cfg, sleep_ms):
        r = cfg["rail"]
        self._pin = machine.Pin(r["pin"], machine.Pin.OUT)
        self._on_level = 0 if r["active_low"] else 1
        self.settle_ms = r["settle_ms"]
        self.off_ms = r["off_ms"]
        self._i2c = cfg["i2c"]
        self._sleep_ms = sleep_ms

    def on(self):
        """Power the parts and wait ``settle_ms`` for them to come up."""
        self._pin.value(self._on_level)
        self._sleep_ms(self.settle_ms)

    def cycle(self, bus_id=None):
        """Power-cycle the rail (every part on it resets), then bring the buses back."""
        for b in self._i2c:  # inputs: no current into the unpowered parts through SDA/SCL
            machine.Pin(b["scl_pin"], machine.Pin.IN)
            machine.Pin(b["sda_pin"], machine.Pin.IN)
        self._pin.value(1 - self._on_level)
        self._sleep_ms(self.off_ms)
        self.on()
        for b in self._i2c:
            _i2c(b)


def link_uart(cfg):
    """The link's UART (serial link or LoRa modem): ``link.uart``'s pins and baud rate, reads
    waiting at most 20 ms for a byte (``simulators/energy.py`` counts that wait)."""
    u = cfg["link"]["uart"]
    return machine.UART(u["id"], baudrate=u["baudrate"], tx=u["tx_pin"], rx=u["rx_pin"], timeout=20)


def battery_reader(cfg):
    """A callable returning the battery's volts, or None without a battery monitor."""
    b = cfg.get("battery")
    if not b:
        return None
    # 11 dB attenuation: ~0-3.9 V full scale (the 0 dB default clips at ~1.1 V)
    adc = machine.ADC(machine.Pin(b["adc_pin"]), atten=machine.ADC.ATTN_11DB)
    ratio = b["divider_ratio"]
    return lambda: adc.read_uv() / 1e6 * ratio
