"""The Alphasense NO2-B43F on an ADS1115 as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes. The node's
parts of the drivers (``drivers.ads1115_core``, ``drivers.no2b43f_core``) are loaded for each
read and released after it, so a node does not hold them while it logs and sends
(docs/benchmarks.md, heap): a single-shot ADS1115 keeps nothing between conversions, and the
calibration is the configuration's. So ``prepare`` has nothing to do (``Sensor``'s): the
driver checks the address (``app.config`` allows only the ADS1115's four) at each read.
What is kept from one read to the next is two ints, the WE and AE conversions' Config words
(``words``): the configuration does not change while the node runs, so they are made at the
first read (``config_word`` validates the inputs, range and data rate then), not at every
minute's sample."""

from drivers import release
from drivers.errors import DriverError

from .sensors import Sensor


class NO2Sensor(Sensor):
    """An Alphasense NO2-B43F on its ISB, read through an ADS1115 (AAN 803 correction)."""

    quantities = ("no2_ppb", "no2_ugm3")

    def __init__(self, spec, bus, clock):
        Sensor.__init__(self, spec, bus, clock)
        self.needs = spec["temperature_sensor"]
        self.words = None  # (WE, AE) ADS1115 Config words, made at the first read

    def read(self, ctx):
        t = ctx.get(self.needs)
        if t is None:
            raise DriverError("no temperature from %r for the NO2 correction" % self.needs)
        # The node's parts of the drivers. The configuration holds the sheet normalised by the
        # build (Calibration.from_sheet) and checked by app.config: its fields as they are.
        from drivers.ads1115_core import ADS1115Core, config_word
        from drivers.no2b43f_core import CalibrationCore, no2_ppb, ppb_to_ugm3

        s = self.spec
        try:
            words = self.words
            if words is None:
                fsr_v, sps = s["fsr_v"], s["data_rate_sps"]
                words = self.words = (config_word(s["we_mux"], fsr_v, sps), config_word(s["ae_mux"], fsr_v, sps))
            dev = ADS1115Core(self.bus, self.clock, s["address"])
            cal = CalibrationCore.from_fields(s["calibration"])
            we_mv = dev.convert_v(words[0]) * 1000.0
            ae_mv = dev.convert_v(words[1]) * 1000.0
            ppb = no2_ppb(s["algorithm"], we_mv, ae_mv, t, cal)
            return [("no2_ppb", ppb), ("no2_ugm3", ppb_to_ugm3(ppb))]
        finally:
            dev = cal = ADS1115Core = config_word = CalibrationCore = no2_ppb = ppb_to_ugm3 = None
            # The whole names, constants in the bytecode: ``release_drivers`` joins "drivers." and
            # each name, a new string (looked up among the interned ones) at every minute's read.
            release("drivers.ads1115_core")
            release("drivers.no2b43f_core")
