"""The TI TMP117 (temperature) as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes."""

from .sensors import Sensor


class TMP117Sensor(Sensor):
    quantities = ("temperature_c",)
    power_up_ms = 2  # 1.5 ms (TMP117 datasheet §7.3.1)

    def prepare(self):
        from drivers.tmp117_core import TMP117Core  # the node's part of the driver (heap)

        s = self.spec
        self.dev = TMP117Core(self.bus, self.clock, s["address"])
        self.dev.check_device_id()
        self.dev.set_averaging(s["averaging"])
        self.dev.set_offset_c(s["offset_c"])
        return self.dev.set_mode("continuous" if s["mode"] == "continuous" else "shutdown")

    def start(self):
        if self.spec["mode"] == "one_shot":
            return self.dev.start_one_shot()
        return 0

    def read(self, ctx):
        return [("temperature_c", self.dev.read_temperature_c())]
