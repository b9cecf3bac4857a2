"""The TI TMP117 (temperature) as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes. The node's
part of the driver (``drivers.tmp117_core``) is loaded when a step needs it and released
after each read, so a node does not hold it while it logs and sends (docs/benchmarks.md,
heap). What the driver keeps between steps is kept here: the conversion's deadline
(``_ready``: a ``drivers.clock.Deadline``) and the Configuration word it last read or wrote
(``_config``), so a one-shot start is one write, not a read-modify-write. ``prepare`` (every
boot, and after the rail's power-cycle) reads the part's Configuration afresh."""

from .sensors import Sensor, release_drivers


class TMP117Sensor(Sensor):
    quantities = ("temperature_c",)
    power_up_ms = 2  # 1.5 ms (TMP117 datasheet §7.3.1)

    def __init__(self, spec, bus, clock):
        Sensor.__init__(self, spec, bus, clock)
        self.dev = None
        self.ready = None  # the driver's conversion Deadline, kept from one step to the next
        self.config = None  # the driver's Configuration word, likewise

    def _driver(self):
        if self.dev is None:
            from drivers.tmp117_core import TMP117Core  # the node's part of the driver (heap)

            self.dev = TMP117Core(self.bus, self.clock, self.spec["address"])
            if self.ready is not None:
                self.dev._ready = self.ready  # a conversion started before the release
            self.ready = self.dev._ready
            self.dev._config = self.config
        return self.dev

    def prepare(self):
        s = self.spec
        self.dev = self.ready = self.config = None  # a new boot or a power-cycled part
        dev = self._driver()
        dev.check_device_id()
        dev.set_offset_c(s["offset_c"])  # before a continuous mode's first conversion
        ms = dev.set_mode("continuous" if s["mode"] == "continuous" else "shutdown", s["averaging"])
        self.config = dev._config
        return ms

    def start(self):
        if self.spec["mode"] == "one_shot":
            dev = self._driver()
            ms = dev.start_one_shot()
            self.config = dev._config
            return ms
        return 0

    def read(self, ctx):
        try:
            return [("temperature_c", self._driver().read_temperature_c())]
        finally:
            self.dev = None
            release_drivers("tmp117_core")
