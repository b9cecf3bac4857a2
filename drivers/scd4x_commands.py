"""Sensirion SCD4x (SCD40/SCD41/SCD43) command table, as pure data.

Source: REFERENCE.md §1.1 (Sensirion driver model v2.0 + SCD4x datasheet v1.3 table 9).
One row per command::

    name: (code, kind, exec_ms, allowed_while_measuring, scd41_only, write_words, read_words)

``kind`` is the datasheet's I2C sequence type (datasheet §3.3):

``"send"``   send command: the 16-bit code only.
``"write"``  write: code + ``write_words`` words, each with its CRC.
``"read"``   read: code, wait ``exec_ms``, then a read of ``read_words`` words (+ CRC each).
``"fetch"``  send command and fetch result: code + words, wait ``exec_ms``, read.

``exec_ms`` is the time the host must leave before the read header or the next command
(REFERENCE §1 "Exec time"). Where REFERENCE gives no figure (start_* commands: "–") we use
0; ``wake_up``/``reinit`` list 20 ms with the Sensirion driver waiting 30 ms, and we take the
driver's 30 ms (``_DRIVER_WAIT_MS``). ``allowed_while_measuring`` is the datasheet's
"During meas." column; it applies to periodic and low-power periodic mode alike.
``scd41_only``: the single-shot and power-cycling commands (REFERENCE §1.1 "(SCD41)"); the
SCD43 has them too.

Runs on MicroPython and CPython.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# Command codes, REFERENCE §1.1. Private (``_``) so that MicroPython's compiler folds each
# ``const`` into the table below and keeps neither a global nor its name in the heap;
# CMD_WAKE_UP stays public (the driver and the simulator send it outside the table).
_CMD_START_PERIODIC_MEASUREMENT = const(0x21B1)
_CMD_READ_MEASUREMENT = const(0xEC05)
_CMD_STOP_PERIODIC_MEASUREMENT = const(0x3F86)
_CMD_SET_TEMPERATURE_OFFSET = const(0x241D)
_CMD_GET_TEMPERATURE_OFFSET = const(0x2318)
_CMD_SET_SENSOR_ALTITUDE = const(0x2427)
_CMD_GET_SENSOR_ALTITUDE = const(0x2322)
_CMD_AMBIENT_PRESSURE = const(0xE000)  # set (write 1 word) and get (read 1 word) share it
_CMD_PERFORM_FORCED_RECALIBRATION = const(0x362F)
_CMD_SET_ASC_ENABLED = const(0x2416)
_CMD_GET_ASC_ENABLED = const(0x2313)
_CMD_SET_ASC_TARGET = const(0x243A)
_CMD_GET_ASC_TARGET = const(0x233F)
_CMD_SET_ASC_INITIAL_PERIOD = const(0x2445)
_CMD_GET_ASC_INITIAL_PERIOD = const(0x2340)
_CMD_SET_ASC_STANDARD_PERIOD = const(0x244E)
_CMD_GET_ASC_STANDARD_PERIOD = const(0x234B)
_CMD_START_LOW_POWER_PERIODIC_MEASUREMENT = const(0x21AC)
_CMD_GET_DATA_READY_STATUS = const(0xE4B8)
_CMD_PERSIST_SETTINGS = const(0x3615)
_CMD_GET_SERIAL_NUMBER = const(0x3682)
_CMD_PERFORM_SELF_TEST = const(0x3639)
_CMD_PERFORM_FACTORY_RESET = const(0x3632)
_CMD_REINIT = const(0x3646)
_CMD_GET_SENSOR_VARIANT = const(0x202F)
_CMD_MEASURE_SINGLE_SHOT = const(0x219D)
_CMD_MEASURE_SINGLE_SHOT_RHT_ONLY = const(0x2196)
_CMD_POWER_DOWN = const(0x36E0)
CMD_WAKE_UP = const(0x36F6)

# REFERENCE §1.1: reinit and wake_up take 20 ms; the Sensirion driver waits 30 ms.
_DRIVER_WAIT_MS = const(30)

# Row fields (indices into a COMMANDS value).
CODE = 0
KIND = 1
EXEC_MS = 2
WHILE_MEASURING = 3
SCD41_ONLY = 4
WRITE_WORDS = 5
READ_WORDS = 6

COMMANDS = {
    # name: (code, kind, exec_ms, allowed_while_measuring, scd41_only, write_words, read_words)
    "start_periodic_measurement": (_CMD_START_PERIODIC_MEASUREMENT, "send", 0, False, False, 0, 0),
    "read_measurement": (_CMD_READ_MEASUREMENT, "read", 1, True, False, 0, 3),
    "stop_periodic_measurement": (_CMD_STOP_PERIODIC_MEASUREMENT, "send", 500, True, False, 0, 0),
    "set_temperature_offset": (_CMD_SET_TEMPERATURE_OFFSET, "write", 1, False, False, 1, 0),
    "get_temperature_offset": (_CMD_GET_TEMPERATURE_OFFSET, "read", 1, False, False, 0, 1),
    "set_sensor_altitude": (_CMD_SET_SENSOR_ALTITUDE, "write", 1, False, False, 1, 0),
    "get_sensor_altitude": (_CMD_GET_SENSOR_ALTITUDE, "read", 1, False, False, 0, 1),
    "set_ambient_pressure": (_CMD_AMBIENT_PRESSURE, "write", 1, True, False, 1, 0),
    "get_ambient_pressure": (_CMD_AMBIENT_PRESSURE, "read", 1, True, False, 0, 1),
    "perform_forced_recalibration": (_CMD_PERFORM_FORCED_RECALIBRATION, "fetch", 400, False, False, 1, 1),
    "set_automatic_self_calibration_enabled": (_CMD_SET_ASC_ENABLED, "write", 1, False, False, 1, 0),
    "get_automatic_self_calibration_enabled": (_CMD_GET_ASC_ENABLED, "read", 1, False, False, 0, 1),
    "set_automatic_self_calibration_target": (_CMD_SET_ASC_TARGET, "write", 1, False, False, 1, 0),
    "get_automatic_self_calibration_target": (_CMD_GET_ASC_TARGET, "read", 1, False, False, 0, 1),
    "set_automatic_self_calibration_initial_period": (_CMD_SET_ASC_INITIAL_PERIOD, "write", 1, False, False, 1, 0),
    "get_automatic_self_calibration_initial_period": (_CMD_GET_ASC_INITIAL_PERIOD, "read", 1, False, False, 0, 1),
    "set_automatic_self_calibration_standard_period": (_CMD_SET_ASC_STANDARD_PERIOD, "write", 1, False, False, 1, 0),
    "get_automatic_self_calibration_standard_period": (_CMD_GET_ASC_STANDARD_PERIOD, "read", 1, False, False, 0, 1),
    "start_low_power_periodic_measurement": (_CMD_START_LOW_POWER_PERIODIC_MEASUREMENT, "send", 0, False, False, 0, 0),
    "get_data_ready_status": (_CMD_GET_DATA_READY_STATUS, "read", 1, True, False, 0, 1),
    "persist_settings": (_CMD_PERSIST_SETTINGS, "send", 800, False, False, 0, 0),
    "get_serial_number": (_CMD_GET_SERIAL_NUMBER, "read", 1, False, False, 0, 3),
    "perform_self_test": (_CMD_PERFORM_SELF_TEST, "read", 10000, False, False, 0, 1),
    "perform_factory_reset": (_CMD_PERFORM_FACTORY_RESET, "send", 1200, False, False, 0, 0),
    "reinit": (_CMD_REINIT, "send", _DRIVER_WAIT_MS, False, False, 0, 0),
    "get_sensor_variant": (_CMD_GET_SENSOR_VARIANT, "read", 1, False, False, 0, 1),
    "measure_single_shot": (_CMD_MEASURE_SINGLE_SHOT, "send", 5000, False, True, 0, 0),
    "measure_single_shot_rht_only": (_CMD_MEASURE_SINGLE_SHOT_RHT_ONLY, "send", 50, False, True, 0, 0),
    "power_down": (_CMD_POWER_DOWN, "send", 1, False, True, 0, 0),
    # Not ACKed by the sensor (REFERENCE §1.1); "allowed while measuring" is "–": a sleeping
    # sensor is not measuring.
    "wake_up": (CMD_WAKE_UP, "send", _DRIVER_WAIT_MS, False, True, 0, 0),
}

# Datasheet exec times where they differ from the driver's wait (the simulator models these).
DEVICE_EXEC_MS = {"reinit": 20, "wake_up": 20}

# Signal update intervals (REFERENCE §1.1 notes; §1.4).
PERIODIC_INTERVAL_MS = 5000
LOW_POWER_INTERVAL_MS = 30000

# Valid argument ranges (REFERENCE §1.1, §1.4).
ALTITUDE_MAX_M = 3000
PRESSURE_MIN_HPA = 700
PRESSURE_MAX_HPA = 1200
FRC_FAILED = 0xFFFF
FRC_ZERO = 0x8000
DATA_READY_MASK = 0x07FF

# Sensor variant, bits 15:12 of get_sensor_variant's word (REFERENCE §1.1).
VARIANTS = {0b0000: "SCD40", 0b0001: "SCD41", 0b0101: "SCD43"}
