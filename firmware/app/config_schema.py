"""The node configuration's schema as data (used by ``config.py``, which re-exports it).

A section is a tuple of ``(key, spec)`` pairs turned into flat field tuples ``(key, kind,
default, a, b, nullable)`` by ``_fields``; the small constructors below make the specs
(``_int(lo, hi, default)``, ``_choice(options, default)``, ``_pin(output)``, ...; ``_REQ``
as the default marks a required key). ``SCHEMA`` is ``config.json``, ``SECRETS_SCHEMA``
``secrets.json``; ``PARTS`` the I2C parts a node knows (addresses, quantities, own fields),
``CHIPS`` the GPIO facts, ``QUANTITIES`` the quantity names. Units are in the key names.
``config.release()`` drops this module together with ``config`` after boot.

Runs on MicroPython and CPython; imports nothing.
"""

CONFIG_VERSION = 1

_REQ = object()  # "no default": the key is required


# A spec is a flat 6-tuple (key, kind, default, a, b, nullable): one small object per field.
def _spec(kind, default, a=None, b=None):
    return (None, kind, default, a, b, False)


def _int(lo, hi, default=_REQ):
    return _spec("int", default, lo, hi)


def _num(lo, hi, default=_REQ):
    return _spec("num", default, lo, hi)


def _bool(default=_REQ):
    return _spec("bool", default)


def _str(max_len, default=_REQ):
    return _spec("str", default, 1, max_len)


def _choice(options, default=_REQ):
    return _spec("choice", default, options)


def _pin(output, default=_REQ):
    return _spec("pin", default, output)


def _name(default=_REQ):
    return _spec("name", default, 16)


def _hex(lengths, default=_REQ):
    return _spec("hex", default, lengths)


def _fields(pairs):
    return tuple([(key,) + spec[1:] for key, spec in pairs])


def _obj(pairs, default=_REQ):
    return _spec("obj", default, _fields(pairs))


def _list(item, lo, hi):
    return _spec("list", _REQ, item, (lo, hi))


def _opt(spec):
    """The same spec, but null is allowed and is the default."""
    return spec[:2] + (None,) + spec[3:5] + (True,)

# -- what the node knows about -----------------------------------------------------------------
# Quantity names (unit in the name), as protocol/quantities.py maps them to SenML.
QUANTITIES = ("co2_ppm", "temperature_c", "rh_percent", "no2_ppb", "no2_ugm3", "distance_cm",
              "fill_ratio", "battery_v")

# ESP32 GPIO facts (ESP32 datasheet; RTC GPIOs per REFERENCE.md §5). 6-11 are the SPI flash,
# 1/3 the USB console (UART0), 34-39 input only, ADC1 = 32-39 (ADC2 is unusable with WiFi on).
CHIPS = {"esp32": {
    "gpio": (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27,
             32, 33, 34, 35, 36, 37, 38, 39),
    "input_only": (34, 35, 36, 37, 38, 39), "console": (1, 3), "adc1": (32, 33, 34, 35, 36, 37, 38, 39),
    "rtc": (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)}}

_SCD4X = _fields((
    ("variant", _choice(("scd41", "scd40"), "scd41")),
    ("mode", _choice(("periodic", "low_power", "single_shot"), "periodic")),
    ("temperature_offset_c", _num(0, 20, 4.0)),  # datasheet: 0-20 °C recommended
    ("altitude_m", _int(0, 3000, 0)),
    ("ambient_pressure_hpa", _opt(_num(700, 1200))),
    ("asc_enabled", _bool(True)),
))
_TMP117 = _fields((
    ("mode", _choice(("one_shot", "continuous"), "one_shot")),
    ("averaging", _choice((1, 8, 32, 64), 8)),  # REFERENCE §2.2 AVG field
    ("offset_c", _num(-10, 10, 0.0)),
))
_CALIBRATION = (  # pairs; AAN 803 sheet values (drivers/no2b43f.py field names), per sensor
    ("serial_number", _opt(_str(32))),
    ("we_electronic_zero_mv", _num(-1000, 1000)),
    ("we_sensor_zero_mv", _num(-1000, 1000)),
    ("ae_electronic_zero_mv", _num(-1000, 1000)),
    ("ae_sensor_zero_mv", _num(-1000, 1000)),
    ("we_sensitivity_mv_ppb", _num(-10, 10)),
)
_MUX = ("AIN0", "AIN1", "AIN2", "AIN3")
_ADS1115 = _fields((
    ("electrode", _choice(("NO2-B43F",), "NO2-B43F")),
    ("we_mux", _choice(_MUX, "AIN0")),
    ("ae_mux", _choice(_MUX, "AIN1")),
    ("fsr_v", _choice((6.144, 4.096, 2.048, 1.024, 0.512, 0.256), 0.512)),  # REFERENCE §3.1
    ("data_rate_sps", _choice((8, 16, 32, 64, 128, 250, 475, 860), 8)),
    ("algorithm", _choice((1, 2, 3, 4), 1)),  # AAN 803 (REFERENCE §3.2)
    ("temperature_sensor", _name()),
    ("calibration", _obj(_CALIBRATION)),
))
_I2CXL = _fields((
    ("repeats", _int(1, 25, 5)),  # median of this many pings (REFERENCE §4: 3-5)
    ("empty_cm", _num(20, 765)),  # sensor to the empty bin's floor (commissioning)
    ("full_cm", _num(20, 765, 30.0)),  # sensor to the surface when full
    ("air_temperature_sensor", _opt(_name())),
))
# part -> (allowed 7-bit addresses, default, what sets them, quantities, own fields).
# Addresses: REFERENCE §1 (SCD4x), §2.1 (TMP117), §3.1 (ADS1115), §4 (I2CXL: even 8-bit
# addresses except 0, 80, 164, 170).
PARTS = {
    "scd4x": ((0x62,), 0x62, "fixed", ("co2_ppm", "temperature_c", "rh_percent"), _SCD4X),
    "tmp117": ((0x48, 0x49, 0x4A, 0x4B), 0x48, "ADD0 to GND/V+/SDA/SCL", ("temperature_c",), _TMP117),
    "ads1115": ((0x48, 0x49, 0x4A, 0x4B), 0x48, "ADDR to GND/VDD/SDA/SCL", ("no2_ppb", "no2_ugm3"), _ADS1115),
    "i2cxl": (range(0x08, 0x78), 0x70,
              "0x08..0x77 except 0x28, 0x52, 0x55", ("distance_cm", "fill_ratio"), _I2CXL),
}
_I2CXL_REFUSED = (0x28, 0x52, 0x55)  # 8-bit 80, 164, 170
_SENSOR = _fields((
    ("name", _name()),
    ("part", _choice(tuple(sorted(PARTS)))),
    ("bus", _int(0, 1, 0)),
    ("address", _int(0x08, 0x77, None)),  # None: the part's default
))
_RULE = _fields((("lo", _opt(_num(-1e6, 1e6))), ("hi", _opt(_num(-1e6, 1e6))),
                 ("max_step", _opt(_num(0, 1e6))), ("stuck_n", _int(0, 1000, 0))))
_UART = (("id", _int(1, 2)), ("tx_pin", _pin(True)), ("rx_pin", _pin(False)),
         ("baudrate", _int(1200, 921600, 115200)))
_LINK = _fields((
    ("type", _choice(("serial", "mqtt", "lorawan"))),
    ("uart", _opt(_obj(_UART))),
    ("serial", _opt(_obj((("ack_timeout_ms", _int(100, 60000, 2000)),
                          ("max_batch_records", _int(1, 64, 16)))))),
    ("wifi", _opt(_obj((("ssid", _str(32)), ("connect_timeout_ms", _int(1000, 120000, 15000)))))),
    ("mqtt", _opt(_obj((("host", _str(253)), ("port", _int(1, 65535, 8883)), ("tls", _bool(True)),
                        ("ca_file", _opt(_str(64))), ("username", _opt(_str(64))),
                        ("client_id", _opt(_str(64))), ("keepalive_s", _int(10, 3600, 60)),
                        ("ack_timeout_ms", _int(100, 120000, 5000)))))),
    ("modem", _opt(_obj((("dialect", _choice(("rak3172", "lora-e5"))),  # drivers/atmodem.py DIALECTS
                         ("reset_pin", _opt(_pin(True))))))),
    ("lorawan", _opt(_obj((("region", _choice(("EU868",), "EU868")),
                           ("join_eui", _hex((8,), "0000000000000000")), ("dev_eui", _opt(_hex((8,)))),
                           ("port", _int(1, 223, 2)), ("confirmed", _bool(True)), ("adr", _bool(True)),
                           ("data_rate", _int(0, 5, 5)), ("join_backoff_max_s", _int(60, 86400, 3600)),
                           # batching: a reading waits on the flash at most this long (0: send every wake)
                           ("max_delay_s", _int(0, 86400, 0)))))),
))
# link type -> (sections it needs, sections it may have with defaults)
_LINK_SECTIONS = {"serial": (("uart",), ("serial",)), "mqtt": (("wifi", "mqtt"), ()),
                  "lorawan": (("uart", "modem"), ("lorawan",))}

SCHEMA = _fields((
    ("config_version", _int(CONFIG_VERSION, CONFIG_VERSION)),
    ("device_id", _spec("device_id", _REQ)),
    ("profile", _opt(_str(32))),
    ("board", _opt(_str(48))),
    ("chip", _choice(tuple(CHIPS), "esp32")),
    ("firmware_version", _opt(_hex((8, 16, 32)))),
    ("interval_s", _int(5, 86400)),
    ("mean_period_s", _int(0, 86400, 0)),
    ("status_every_n_cycles", _int(1, 10000, 30)),
    ("watchdog_ms", _int(5000, 600000, 60000)),
    ("power", _obj((("source", _choice(("mains", "battery", "solar"))),
                    ("sleep", _choice(("light", "deep")))))),
    # app/store.py RecordLog bound. A segment must hold one wake's reading and status record
    # (each up to ~1 KB) with a gap record's room: at least 2048 bytes, so the smallest log
    # whose default segment (max_bytes // 8) is that big is 16384 bytes.
    ("log", _obj((("max_bytes", _int(16384, 2097152, 262144)),
                  ("segment_bytes", _opt(_int(2048, 65536)))), {})),
    ("i2c", _list(_obj((("id", _int(0, 1, 0)), ("sda_pin", _pin(True)), ("scl_pin", _pin(True)),
                        ("freq_hz", _int(10000, 400000, 100000)),
                        ("timeout_us", _int(1000, 1000000, 200000)))), 1, 2)),
    # off_ms: how long a power-cycle after a stuck bus keeps the rail off (app/hw.py Rail.cycle)
    ("rail", _opt(_obj((("pin", _pin(True)), ("active_low", _bool(True)), ("settle_ms", _int(0, 10000, 10)),
                        ("off_ms", _int(10, 10000, 500)))))),
    ("battery", _opt(_obj((("adc_pin", _pin(False)), ("divider_ratio", _num(1, 20, 2.0)))))),
    ("status_led", _opt(_obj((("pin", _pin(True)), ("active_low", _bool(False)))))),
    ("sensors", _list(_spec("sensor", _REQ), 1, 8)),
    ("quality", _spec("rules", {}, _RULE)),
    ("link", _spec("obj", _REQ, _LINK)),
))

SECRETS_SCHEMA = _fields((
    ("device_key_hex", _spec("key", _REQ, (16, 32))),
    ("wifi_password", _opt(_spec("password", _REQ, 8, 63))),  # WPA2 passphrase: 8-63 characters
    ("mqtt_password", _opt(_spec("password", _REQ, 12, 256))),
    ("lorawan_app_key_hex", _opt(_spec("key", _REQ, (16,)))),
))
_SAMPLE_PASSWORDS = ("password", "changeme", "change-me", "secret", "12345678", "123456789012",
                     "admin", "public", "civicedge", "example")
