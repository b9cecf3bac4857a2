"""The Alphasense NO2-B43F on an ADS1115 as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes."""

from drivers.errors import DriverError

from .sensors import Sensor


class NO2Sensor(Sensor):
    """An Alphasense NO2-B43F on its ISB, read through an ADS1115 (AAN 803 correction)."""

    quantities = ("no2_ppb", "no2_ugm3")

    def __init__(self, spec, bus, clock):
        Sensor.__init__(self, spec, bus, clock)
        self.needs = spec["temperature_sensor"]

    def prepare(self):
        from drivers.ads1115 import ADS1115
        from drivers.no2b43f import Calibration

        self.dev = ADS1115(self.bus, self.clock, self.spec["address"])
        self.cal = Calibration.from_sheet(self.spec["calibration"])
        return 0

    def read(self, ctx):
        from drivers.no2b43f import no2_ppb, ppb_to_ugm3

        t = ctx.get(self.needs)
        if t is None:
            raise DriverError("no temperature from %r for the NO2 correction" % self.needs)
        s = self.spec
        we_mv = self.dev.read_single_shot_v(s["we_mux"], s["fsr_v"], s["data_rate_sps"]) * 1000.0
        ae_mv = self.dev.read_single_shot_v(s["ae_mux"], s["fsr_v"], s["data_rate_sps"]) * 1000.0
        ppb = no2_ppb(s["algorithm"], we_mv, ae_mv, t, self.cal)
        return [("no2_ppb", ppb), ("no2_ugm3", ppb_to_ugm3(ppb))]
