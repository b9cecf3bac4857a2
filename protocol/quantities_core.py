"""The node's part of ``protocol.quantities``: THE table itself (``QUANTITIES``) and
``BY_QUANTITY``, which the SenML encoder (``protocol.senml_core``) looks names up in.

``protocol.quantities`` re-exports both and adds the other indexes, the quality-flag codes
and the lookup functions, which only a gateway, the LoRaWAN pack and the tests use; a node on
a framed link imports only this module. The rules that keep the table honest:
``protocol/quantities.py``'s docstring. Runs on MicroPython and CPython.
"""

NUM = "num"
TEXT = "text"

# code, project quantity, SenML name, SenML unit (None: no unit), value kind
QUANTITIES = (
    (1, "co2_ppm", "co2", "ppm", NUM),             # SCD4x CO2 (REFERENCE §1)
    (2, "temperature_c", "temp", "Cel", NUM),      # SCD4x / TMP117 (§1, §2)
    (3, "rh_percent", "rh", "%RH", NUM),           # SCD4x relative humidity
    (4, "no2_ppb", "no2", "ppb", NUM),             # NO2-B43F via ADS1115 (§3)
    (5, "no2_ugm3", "no2-mass", "ug/m3", NUM),     # §3.3 conversion at 20 °C
    (6, "distance_cm", "dist", "cm", NUM),         # I2CXL-MaxSonar range (§4)
    (7, "fill_ratio", "fill", "/", NUM),           # bin fill 0..1 (§4)
    (8, "battery_v", "batt", "V", NUM),            # status: battery volts
    (9, "boot_reason", "boot", None, TEXT),        # status: machine.reset_cause() name
    (10, "uptime_s", "uptime", "s", NUM),          # status: seconds since boot
    (11, "rssi_dbm", "rssi", "dBm", NUM),          # status: link signal strength
)

BY_QUANTITY = {}
for _row in QUANTITIES:
    BY_QUANTITY[_row[1]] = _row
del _row
