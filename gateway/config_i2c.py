"""The ``[sources.i2c]`` section of the gateway's configuration: the sensors wired to the Pi.

Called by ``gateway.config`` with its table reader (``get``/``has``/``fail``/``done``: every
problem is a ``ConfigError`` naming the key and the file). Each ``[[sources.i2c.sensors]]``
has ``name``, ``part``, ``address`` and the part's own settings (``SENSOR_KEYS``), which
mirror a node's (firmware/app/config_schema.py ``_ADS1115``, ``_I2CXL``; the bin-level
profile's sonar) and become ``LocalSensor.options``, the ``sensor_options`` of
``gateway.sources.local_i2c.LocalI2CSource``:

- ``ads1115`` (an Alphasense NO2-B43F on its ISB): ``calibration_file`` (required: the
  sensor's calibration sheet, TOML or JSON with the ``drivers.no2b43f`` field names, as
  ``civicedge firmware build --calibration`` takes; read and checked here by
  ``Calibration.from_sheet``), ``temperature_sensor`` (a tmp117 or scd4x on this bus; default:
  the first TMP117, else the SCD4x), ``we_mux``/``ae_mux`` (AIN0/AIN1), ``algorithm`` (AAN 803,
  1).
- ``i2cxl``: ``empty_cm`` and ``full_cm`` (the bin's depths; with them the fill ratio is
  reported too; ``full_cm`` defaults to 30 as on a node), ``repeats`` (5),
  ``air_temperature_sensor`` (speed-of-sound correction; none by default).

Quantities: one device's records hold each quantity once, so two sensors that report the same
quantity are refused (``gateway.sources.i2c_sensors.assign_reports``), except an SCD4x beside
a TMP117: the TMP117's temperature is reported.
"""

import re

from civicedge.hardware_render import BuildError, read_data
from gateway.config_types import I2CSource, LocalSensor
from gateway.sources.i2c_sensors import (
    TEMPERATURE_PARTS, QuantityClash, assign_reports, default_temperature_sensor, part_quantities)

PARTS = ("scd4x", "tmp117", "ads1115", "i2cxl")  # sensors the Pi can read itself (drivers/)
SENSOR_KEYS = {"scd4x": (), "tmp117": (),
               "ads1115": ("calibration_file", "temperature_sensor", "we_mux", "ae_mux", "algorithm"),
               "i2cxl": ("empty_cm", "full_cm", "repeats", "air_temperature_sensor")}
_MUX = ("AIN0", "AIN1", "AIN2", "AIN3")  # ADS1115 single-ended inputs (REFERENCE §3.1)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,15}\Z")


def i2c_source(t, devices):
    """``[sources.i2c]`` (``t``: ``gateway.config``'s table reader) -> ``I2CSource``; every
    problem is a ``ConfigError`` through ``t.fail`` naming the key."""
    dev_id = t.get("device_id", "str", hint="the [[devices]] entry (link = \"local\") of the Pi's own sensors")
    if not any(d.id == dev_id and d.link == "local" for d in devices):
        t.fail("device_id", "%r is not a [[devices]] entry with link = \"local\"" % dev_id)
    tables, sensors, names, addrs = t.tables("sensors"), [], set(), set()
    for s in tables:
        name = s.get("name", "str", pattern=(_NAME, "1-16 of a-z 0-9 _, starting with a letter"))
        part = s.get("part", "str", choices=PARTS)
        addr = s.get("address", "int", lo=0x08, hi=0x77)
        if name in names or addr in addrs:
            s.fail("name" if name in names else "address", "already used by another sensor on this bus")
        names.add(name)
        addrs.add(addr)
        for k in sorted(set(s.data) - set(SENSOR_KEYS[part]) - {"name", "part", "address"}):
            owners = [p for p, keys in SENSOR_KEYS.items() if k in keys]
            if owners:
                s.fail(k, "is a setting of %s, not of %s; remove it" % (" or ".join(owners), part))
        sensors.append(LocalSensor(name, part, addr, _sensor_options(s, part)))
        s.done()
    if not sensors:
        t.fail("sensors", "missing: add a [[sources.i2c.sensors]] entry per sensor (name, part, address)")
    temps = [x.name for x in sensors if x.part in TEMPERATURE_PARTS]
    for s, sensor in zip(tables, sensors):
        ref = {"ads1115": "temperature_sensor", "i2cxl": "air_temperature_sensor"}.get(sensor.part)
        if ref is None:
            continue
        if sensor.part == "ads1115" and ref not in sensor.options:
            if not temps:
                s.fail(ref, "missing: the NO2-B43F's reading is corrected with its temperature "
                            "(AAN 803); wire a tmp117 beside it, add it here and name it")
            sensor.options[ref] = default_temperature_sensor(sensors)
        if sensor.options.get(ref) is not None and sensor.options[ref] not in temps:
            s.fail(ref, "%r is not the name of a tmp117 or scd4x sensor on this bus (%s)"
                   % (sensor.options[ref], ", ".join(temps) or "there is none"))
    try:
        assign_reports([(x.name, x.part, part_quantities(x.part, x.options)) for x in sensors])
    except QuantityClash as e:
        tables[e.index].fail("part", str(e))
    return I2CSource(dev_id, t.get("bus", "int", 1, 0, 31), t.get("interval_s", "int", 120, 5, 86400), tuple(sensors))


def _sensor_options(s, part):
    """A local sensor's settings (``SENSOR_KEYS[part]``), as its reader takes them."""
    opts = {}
    if part == "ads1115":
        opts["calibration"] = _calibration(s)
        name = s.get("temperature_sensor", "str", None, pattern=(_NAME, "a sensor's name"))
        if name is not None:
            opts["temperature_sensor"] = name
        opts["we_mux"] = s.get("we_mux", "str", "AIN0", choices=_MUX)
        opts["ae_mux"] = s.get("ae_mux", "str", "AIN1", choices=_MUX)
        if opts["ae_mux"] == opts["we_mux"]:
            s.fail("ae_mux", "WE and AE must be on different inputs (both %s)" % opts["we_mux"])
        opts["algorithm"] = s.get("algorithm", "int", 1, choices=(1, 2, 3, 4))  # AAN 803 (REFERENCE §3.2)
        if opts["algorithm"] == 2 and opts["calibration"]["ae_sensor_zero_mv"] == 0:
            s.fail("algorithm", "algorithm 2 divides by the sheet's ae_sensor_zero_mv, which is 0; use 1, 3 or 4")
    elif part == "i2cxl":
        opts["repeats"] = s.get("repeats", "int", 5, 1, 25)  # median of this many pings (REFERENCE §4)
        empty = s.get("empty_cm", "number", None, 20, 765)  # the part ranges 20-765 cm (REFERENCE §4)
        if empty is None and s.has("full_cm"):
            s.fail("empty_cm", "missing: full_cm is given, and the fill ratio needs both; measure the "
                               "sensor-to-floor distance of the empty bin")
        if empty is not None:
            full = s.get("full_cm", "number", 30.0, 20, 765)
            if full >= empty:
                s.fail("full_cm", "%r must be less than empty_cm (%r): the full level is nearer the sensor"
                       % (full, empty))
            opts["empty_cm"], opts["full_cm"] = float(empty), float(full)
        name = s.get("air_temperature_sensor", "str", None, pattern=(_NAME, "a sensor's name"))
        if name is not None:
            opts["air_temperature_sensor"] = name
    return opts


def _calibration(s):
    """The NO2-B43F's calibration sheet named by ``calibration_file`` (TOML or JSON with the
    ``drivers.no2b43f`` field names, as ``civicedge firmware build --calibration`` takes),
    normalised by ``Calibration.from_sheet``."""
    from drivers.no2b43f import Calibration

    path = s.get("calibration_file", "path", hint="the Alphasense calibration sheet of this NO2-B43F "
                 "(TOML or JSON, the field names of drivers/no2b43f.py); without it no NO2 value "
                 "can be computed")
    try:
        sheet = read_data(path)
        return Calibration.from_sheet(sheet).to_sheet()
    except BuildError as e:
        s.fail("calibration_file", "cannot be read: %s" % e)
    except ValueError as e:
        s.fail("calibration_file", "%s: %s; copy the values from the sensor's sheet" % (path, e))
