"""The MaxBotix I2CXL (bin fill) as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes. The node's
part of the driver (``drivers.i2cxl_core``, ``drivers.binfill_core``) is loaded for each
read and released after it, so a node does not hold it while it logs and sends
(docs/benchmarks.md, heap): the I2CXL needs no set-up and keeps nothing between readings
but its 100 ms ring-down (kept here). So ``prepare`` has nothing to do (``Sensor``'s): the
driver checks the address (``app.config`` allows only the I2CXL's) at each read."""

from .sensors import Sensor, release_drivers


class SonarSensor(Sensor):
    """A MaxBotix I2CXL over a bin: distance (median of pings) and fill ratio."""

    quantities = ("distance_cm", "fill_ratio")

    def __init__(self, spec, bus, clock):
        Sensor.__init__(self, spec, bus, clock)
        self.needs = spec.get("air_temperature_sensor")
        self.ring = None  # the driver's ring-down Deadline, kept from one read to the next

    def read(self, ctx):
        from drivers.binfill_core import fill_ratio
        from drivers.i2cxl_core import I2CXLCore  # the node's part of the driver

        s = self.spec
        air_c = ctx.get(self.needs) if self.needs else None
        try:
            dev = I2CXLCore(self.bus, self.clock, s["address"])
            if self.ring is not None:
                dev._ring = self.ring  # a read tried again at once still waits out the last ping
            self.ring = dev._ring
            d = dev.measure_distance_cm(repeats=s["repeats"], air_temperature_c=air_c)
            return [("distance_cm", d), ("fill_ratio", fill_ratio(d, s["empty_cm"], s["full_cm"]))]
        finally:
            dev = I2CXLCore = fill_ratio = None
            release_drivers("i2cxl_core", "binfill_core")
