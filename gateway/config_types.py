"""The gateway configuration's value types: a tree of frozen dataclasses, made only by
``gateway.config`` after validation (what each field means: docs/gateway-setup.md)."""

from dataclasses import dataclass, field

# upstream.lorawan.max_delay_s: a routine uplink not yet 3/4 full waits at most this (s) for
# more rows (gateway.forward.lorawan; at SF12 one reading costs 2/3 of a full uplink's airtime)
MAX_DELAY_S = 900
# sources.chirpstack.max_held: LoRaWAN uplinks the source holds in memory while the disk is
# full (gateway.sources.holding; about 0.5 KB each, so the bound keeps 32 MB at most)
MAX_HELD, MAX_HELD_LIMIT = 4096, 65536
# upstream.mqtt.puback_timeout_s: seconds the oldest publish may wait for its PUBACK (since it
# was sent, or since the last PUBACK) before the forwarder reconnects (gateway.forward.mqtt)
PUBACK_TIMEOUT_S, PUBACK_TIMEOUT_LIMIT_S = 60, 3600


@dataclass(frozen=True)
class MQTTConnection:
    host: str
    port: int
    tls: bool
    tls_verify: bool
    ca_file: str | None  # None with tls: the system's trust store
    client_cert_file: str | None
    client_key_file: str | None
    username: str
    password_file: str | None  # None only with a client certificate
    client_id: str
    keepalive_s: int


@dataclass(frozen=True)
class SerialSource:
    port: str  # a device path (best: /dev/serial/by-id/...) or a pyserial URL
    baudrate: int


@dataclass(frozen=True)
class ChirpStackSource:
    mqtt: MQTTConnection
    application_id: str  # a UUID, or "+" for every application
    f_port: int = 2  # the LoRaWAN FPort civicedge packs travel on (config.LORAWAN_FPORT)
    max_held: int = MAX_HELD  # uplinks held in memory while the disk is full


@dataclass(frozen=True)
class LocalSensor:
    name: str
    part: str
    address: int
    # the part's settings, as gateway.sources.i2c_sensors' readers take them (its
    # ``sensor_options[name]``): an ads1115's "calibration" (the sheet, normalised by
    # drivers.no2b43f.Calibration) and "temperature_sensor"; an i2cxl's "empty_cm"/"full_cm"...
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class I2CSource:
    device_id: str
    bus: int  # /dev/i2c-<bus>
    interval_s: int
    sensors: tuple[LocalSensor, ...]


@dataclass(frozen=True)
class Sources:
    serial: tuple[SerialSource, ...] = ()
    site_broker: MQTTConnection | None = None
    chirpstack: ChirpStackSource | None = None
    i2c: I2CSource | None = None


@dataclass(frozen=True)
class MQTTUpstream:
    mqtt: MQTTConnection
    encoding: str
    max_inflight: int
    readings_per_publish: int
    protocol: str = "5"  # MQTT version: "5" (default) or "3.1.1"
    puback_timeout_s: int = PUBACK_TIMEOUT_S  # no PUBACK this long: reconnect, send again


@dataclass(frozen=True)
class LoRaWANUpstream:
    port: str
    baudrate: int
    dialect: str
    dev_eui: str | None  # None: the modem's own
    join_eui: str
    app_key_file: str
    ttn_fair_use: bool
    confirmed_alarms: bool
    max_delay_s: int = MAX_DELAY_S


@dataclass(frozen=True)
class Outbox:
    path: str
    max_bytes: int
    max_age_s: int
    history_max_bytes: int = 64 * 2**20  # delivered readings kept for export; 0: none
    history_max_age_s: int = 35 * 86400


@dataclass(frozen=True)
class Metrics:
    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class Device:
    id: str
    profile: str
    link: str
    dev_eui: str | None = None
    attributes: dict = field(default_factory=dict)  # str -> str, for an alarm's applies_to


@dataclass(frozen=True)
class AlarmOverride:
    profile: str
    alarm_id: str
    enabled: bool  # False: the site does not run this rule
    values: dict  # rule key -> value: gateway.alarms.rules_from_profile's overrides[alarm_id]


@dataclass(frozen=True)
class GatewayConfig:
    file: str
    site_id: str
    gateway_id: str
    data_dir: str
    hardware_dir: str
    device_keys_file: str | None
    devices: tuple[Device, ...]
    sources: Sources
    outbox: Outbox
    upstream_mqtt: MQTTUpstream | None
    upstream_lorawan: LoRaWANUpstream | None
    metrics: Metrics
    alarm_overrides: tuple[AlarmOverride, ...]
    timezone: str = "Europe/London"  # an IANA zone: alarm windows (hours, days) follow it


# -- validation --------------------------------------------------------------------------------
