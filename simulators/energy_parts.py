"""The parts a node's energy model draws on (REFERENCE.md §5 unless marked): LoRaWAN modules'
currents and batteries' capacities. ``simulators.energy`` re-exports every name here."""

import inspect

from drivers.atmodem import ATModem

HOURS_PER_YEAR = 8760.0
# the driver's linger for a downlink line after a RAK result (firmware/app/links/lorawan.py)
RAK_LINGER_S = inspect.signature(ATModem.__init__).parameters["rx_linger_ms"].default / 1000.0


class Module:
    """A LoRaWAN modem's currents: ``tx_ma`` transmitting, ``rx_ma`` in a receive window,
    ``sleep_ua`` asleep between wakes; ``linger_s``: how long the driver listens on after
    the result for a downlink line (RUI3 prints it separately)."""

    def __init__(self, name, tx_ma, rx_ma, sleep_ua, source, linger_s=0.0):
        self.name = name
        self.tx_ma = tx_ma
        self.rx_ma = rx_ma
        self.sleep_ua = sleep_ua
        self.source = source
        self.linger_s = linger_s


MODULES = {
    # REFERENCE §5 worked example B (TX 70 mA, RX 17 mA; the RAK4200 measured 68.4 / 17.1 mA).
    "example-b": Module("LoRaWAN module of worked example B", 70.0, 17.0, None, "REFERENCE §5"),
    # RAK3172 datasheet (not in REFERENCE): TX 87 mA at 20 dBm 868 MHz — EU868 allows at most
    # 16 dBm EIRP, so this is on the high side — RX 5.22 mA, sleep 1.69 µA at 3.3 V.
    # Source: RAKWireless/rakwireless-docs, docs/Product-Categories/WisDuo/RAK3172-Module/
    # Datasheet/README.md, "Operating Current" and "Sleep Current".
    "rak3172": Module("RAK3172 (RAK3272S board)", 87.0, 5.22, 1.69, "RAK3172 datasheet", RAK_LINGER_S),
}


class Battery:
    """``nominal_mah`` × ``derate`` usable; ``self_discharge`` is the fraction lost per year."""

    def __init__(self, name, nominal_mah, derate, self_discharge, source):
        self.name = name
        self.nominal_mah = nominal_mah
        self.derate = derate
        self.self_discharge = self_discharge
        self.source = source

    @property
    def usable_mah(self):
        return self.nominal_mah * self.derate

    @property
    def self_discharge_ma(self):
        """REFERENCE §5: I_self = C × (annual self-discharge fraction) / 8760 h, in mA."""
        return self.nominal_mah * self.self_discharge / HOURS_PER_YEAR


BATTERIES = {
    # REFERENCE §5: capacities and derates of the worked examples; alkaline ~2-3 %/yr.
    "aa-alkaline": Battery("2×AA alkaline", 2500.0, 0.8, 0.025, "REFERENCE §5"),
    # REFERENCE §5 gives no Li-FeS2 self-discharge. Energizer's L91 datasheet (as quoted on
    # candlepowerforums.com, "Energizer L91 self discharge rate" thread) states 90 % of rated
    # capacity after 15 years at 21 °C, ~0.7 %/yr: 1 %/yr here, on the safe side.
    "aa-lifes2": Battery("2×AA Li-FeS2", 3000.0, 0.85, 0.01, "REFERENCE §5; L91 datasheet"),
    # REFERENCE §5: Li-SOCl2 < 1 %/yr: its upper bound.
    "d-lisocl2": Battery("19 Ah Li-SOCl2 D", 19000.0, 0.8, 0.01, "REFERENCE §5"),
}
