"""The MaxBotix I2CXL (bin fill) as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes."""

from .sensors import Sensor


class SonarSensor(Sensor):
    """A MaxBotix I2CXL over a bin: distance (median of pings) and fill ratio."""

    quantities = ("distance_cm", "fill_ratio")

    def __init__(self, spec, bus, clock):
        Sensor.__init__(self, spec, bus, clock)
        self.needs = spec.get("air_temperature_sensor")

    def prepare(self):
        from drivers.i2cxl import I2CXL

        self.dev = I2CXL(self.bus, self.clock, self.spec["address"])
        return 0

    def read(self, ctx):
        from drivers.binfill import fill_ratio

        s = self.spec
        air_c = ctx.get(self.needs) if self.needs else None
        d = self.dev.measure_distance_cm(repeats=s["repeats"], air_temperature_c=air_c)
        return [("distance_cm", d), ("fill_ratio", fill_ratio(d, s["empty_cm"], s["full_cm"]))]
