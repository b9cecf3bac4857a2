"""Energy model of a node's wake cycle, and the battery life it implies (REFERENCE.md §5).

Pure functions and small value classes; no I/O, no clock. ``scripts/bench energy``
(``simulators/bench.py``) feeds it the profiles of ``hardware/profiles/*.toml`` and the
uplink sizes the real LoRaWAN pack produces; ``tests/unit/test_energy.py`` checks it against
REFERENCE §5's worked examples A and B.

Theory of operation
-------------------
A wake cycle is a list of ``Phase``: a load drawing ``ma`` for ``seconds``. Loads that run at
the same time are separate phases (the ESP32 awake at 40 mA *and* the modem transmitting at
its TX current), so the cycle's charge is simply ``sum(ma * seconds)`` in mA·s; phases
flagged ``awake`` are the ESP32's own time, whose sum is the awake time per wake. A phase
that happens only every n-th wake (an uplink carrying n readings) has ``share`` 1/n: its
charge and time count 1/n per wake.

REFERENCE §5's formulas, unchanged::

    I_avg     = sum(I_i * t_i) / T_cycle + I_sleep (+ loads that never sleep)
    I_self    = C_nominal * (annual self-discharge fraction) / 8760 h
    life_h    = C_nominal * derate / (I_avg + I_self)

(like REFERENCE, the sleep current is counted for the whole cycle, not the cycle less the
awake time: at most one part in ~300 here, and on the safe side).

What a profile's wake costs (``profile_cycle``) — every figure from REFERENCE §1-§6 unless
marked; constants below carry their source:

* deep-sleep wake: ESP32 boot 0.3 s @ 40 mA; a light-sleeping (mains) node resumes without one;
* the switched sensor rail's settle time (profile ``rail_settle_ms``), and while the rail is
  on (from after the boot to the deep sleep) its bleeder R8, 3.3 V / 10 kOhm (the profiles'
  wiring: it lets a power-cycle after a stuck bus really reset the parts);
* sensors: TMP117 one-shot 8x averaging 125 ms; I2CXL 100 ms per ping at 2.7 mA; ADS1115 one
  conversion per electrode, waited as the driver waits it (``single_shot_ms``: the slowest
  chip in spec, 1/(0.9 DR) plus wake-up, 140 ms at 8 SPS); SCD41 periodic (15 mA all the time, the
  read itself ~1 ms) or single shot (5 s, 243 mJ per shot, 0.15 mA idle between shots unless
  the rail is switched off). The ESP32 waits these out, and the rail's settle time, awake at
  40 mA on a mains node and in light sleep at 0.8 mA on a deep-sleeping one
  (``firmware/app/clock.py`` ``NappingClock``: the firmware's sensor clock naps through
  every wait of ``NAP_MIN_MS`` or more; ``nap=True`` here);
* the application: 0.2 s @ 40 mA (encode, append to the flash log, modem commands) — worked
  example B's ESP32 0.5 s less the 0.3 s boot;
* the link: LoRaWAN TX for the time on air of the payload actually packed
  (``protocol.airtime``) at the module's TX current, its receive windows at the RX current,
  and the ESP32 while the modem works, as ``firmware/app/links/lorawan.py`` does it
  (``lorawan_phases`` "light", with the firmware's ``RX1_DELAY_MS`` and ``NAP_MARGIN_MS``):
  awake for one UART read timeout after the modem accepts the uplink, light sleep until the
  margin before RX1, awake through RX1 (on to RX2 for an unconfirmed
  uplink) and, on the RAK, the driver's ``rx_linger_ms`` listening for a downlink line.
  "awake" is the firmware before it napped (40 mA until the result). Batching: a profile's
  ``link.lorawan.max_delay_s`` makes one sending wake in ``max_delay_s // interval_s + 1``
  (``batch_wakes``, the link's rule), its uplink carrying that many readings; a status
  record every ``status_every_n_cycles`` goes in an uplink of its own, its counters cut to
  fill the payload (``fit_status``; 220-222 B at DR5 in tests/e2e/test_node_lorawan.py),
  modelled as a full one. Wi-Fi association + DHCP + MQTT publish 2 s @ 120 mA, TLS +1 s;
  serial: the frame's bytes at the UART's baud rate (negligible);
* sleep: ESP32 deep sleep 10 µA (RTC timer + RTC memory) + a low-Iq regulator 5 µA + the
  modem's sleep current + the battery divider, on a bare module; a development board sleeps
  at 1-10 mA whatever the chip does.

Not modelled (no figure in REFERENCE): the TMP117's and ADS1115's own supply current (µA
class, under 1 % of the ESP32's 40 mA beside them), the NO2 ISB's bias current, flash
write bursts, and the join (once per session: the modem keeps its session across wakes).
"""

import math

from protocol import airtime
from simulators.energy_parts import (  # noqa: F401  (re-exported: this module's API)
    BATTERIES, HOURS_PER_YEAR, MODULES, RAK_LINGER_S, Battery, Module)

# ---- ESP32 (REFERENCE §5) ------------------------------------------------------------------
ESP32_AWAKE_MA = 40.0        # "boot ≈ 0.3 s @ ~40 mA"; worked example B's ESP32 0.5 s @ 40 mA
ESP32_BOOT_S = 0.3
ESP32_APP_S = 0.2            # example B's ESP32 0.5 s minus the 0.3 s boot
ESP32_LIGHT_SLEEP_MA = 0.8
ESP32_DEEP_SLEEP_UA = 10.0   # deep sleep, RTC timer + RTC memory
REGULATOR_IQ_UA = 5.0        # "bare module + low-Iq regulator (<= 5 µA)"
DEV_BOARD_SLEEP_MA = 1.0     # "dev boards ... often sleep at 1-10 mA": the best case
DIVIDER_UA = 1.5             # battery divider 2 x 1 MOhm on ~3 V (hardware/profiles wiring notes)

# ---- Wi-Fi + MQTT (REFERENCE §5 "typical Wi-Fi wake cycle", worked example A) --------------
WIFI_MA = 120.0
WIFI_PUBLISH_S = 2.0         # associate + DHCP + MQTT publish, 1-3 s; example A takes 2 s
TLS_EXTRA_S = 1.0            # "TLS adds ~1 s"

# ---- LoRaWAN (REFERENCE §6.2 delays; §5 example B's windows) --------------------------------
RX_WINDOW_S = 0.05           # example B: 2 RX windows of 50 ms
RECEIVE_DELAY1_S = 1.0       # spec default (TTN uses 5 s); firmware/app/links/lorawan.py RX1_DELAY_MS
RECEIVE_DELAY2_S = 2.0
# What the firmware does around an uplink (firmware/ is not an installed package, so its
# values are repeated here; tests/unit/test_energy.py checks they agree):
NAP_MARGIN_S = 0.050                       # lorawan.py NAP_MARGIN_MS: awake this long before RX1 can open
MODEM_UART_TIMEOUT_S = 0.020               # app/hw.py link_uart: UART(..., timeout=20): the quiet read before the nap

# ---- sensors (REFERENCE §1.4, §2.2, §3.1, §4) -----------------------------------------------
SUPPLY_V = 3.3
SCD41_PERIODIC_MA = 15.0     # periodic (5 s) ~15 mA @ 3.3 V
SCD41_SHOT_S = 5.0           # single shot: 5000 ms execution time
SCD41_SHOT_MJ = 243.0        # per shot, typ
SCD41_IDLE_MA = 0.15         # between shots, typ
SCD41_READ_S = 0.001         # read_measurement: 1 ms
TMP117_CONVERSION_S = {1: 0.0155, 8: 0.125}   # one conversion ≈ 15.5 ms; 8x averaging ≈ 125 ms
SONAR_MA = 2.7               # I2CXL 2.7 mA avg @ 3.3 V
SONAR_PING_S = 0.1           # ~100 ms between readings (ring-down)
RAIL_BLEEDER_MA = 3.3 / 10.0  # R8 10 kOhm across the 3.3 V switched rail (hardware/profiles wiring)


class Phase:
    """``ma`` drawn for ``seconds``; ``awake``: ESP32 time; ``share``: fraction of wakes;
    ``esp32``: the ESP32's own draw, awake or in light sleep (default: ``awake``) — the
    phases that make up how long a wake lasts."""

    __slots__ = ("name", "seconds", "ma", "awake", "share", "esp32")

    def __init__(self, name, seconds, ma, awake=False, share=1.0, esp32=None):
        if seconds < 0 or ma < 0 or not 0 <= share <= 1:
            raise ValueError("phase %r: seconds, ma and share (0..1) must not be negative" % (name,))
        self.name = name
        self.seconds = seconds
        self.ma = ma
        self.awake = awake
        self.share = share
        self.esp32 = awake if esp32 is None else esp32

    @property
    def charge_mas(self):
        return self.seconds * self.ma * self.share

    def __repr__(self):
        return "Phase(%r, %.4g s, %.4g mA, awake=%r, share=%.3g)" % (
            self.name, self.seconds, self.ma, self.awake, self.share)


class Cycle:
    """One wake cycle every ``interval_s``: its phases, the sleep current (µA) and the loads
    that never sleep (``continuous_ma``, e.g. an SCD41 in periodic mode)."""

    def __init__(self, phases, interval_s, sleep_ua, continuous_ma=0.0):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive, got %r" % (interval_s,))
        self.phases = list(phases)
        self.interval_s = interval_s
        self.sleep_ua = sleep_ua
        self.continuous_ma = continuous_ma

    @property
    def charge_mas(self):
        """Charge per wake, mA·s (uplinks shared over the wakes that fill them)."""
        return sum(p.charge_mas for p in self.phases)

    @property
    def awake_s(self):
        """ESP32 awake time per wake, s."""
        return sum(p.seconds * p.share for p in self.phases if p.awake)

    @property
    def wake_s(self):
        """How long a wake lasts (ESP32 awake or in light sleep), s."""
        return sum(p.seconds * p.share for p in self.phases if p.esp32)

    @property
    def average_ma(self):
        return average_current_ma(self.charge_mas, self.interval_s, self.sleep_ua / 1000.0,
                                  self.continuous_ma)

    def life_h(self, battery, self_discharge=True):
        return battery_life_h(self.average_ma, battery, self_discharge)


def average_current_ma(charge_mas, interval_s, sleep_ma, continuous_ma=0.0):
    """REFERENCE §5: I_avg = Σ(I_i·t_i)/T_cycle + I_sleep (+ never-sleeping loads), mA."""
    return charge_mas / interval_s + sleep_ma + continuous_ma


def battery_life_h(average_ma, battery, self_discharge=True):
    """REFERENCE §5: life_h = C_usable / (I_avg + I_self); ``self_discharge`` False leaves
    I_self out, as REFERENCE's worked-example table does."""
    drain = average_ma + (battery.self_discharge_ma if self_discharge else 0.0)
    if drain <= 0:
        raise ValueError("average current must be positive, got %r" % (average_ma,))
    return battery.usable_mah / drain


def years(hours):
    return hours / HOURS_PER_YEAR


# ---- links ---------------------------------------------------------------------------------

WAITS = ("awake", "light", "none")


def lorawan_phases(app_bytes, dr, module, confirmed=True, wait="awake", share=1.0):
    """Phases of one LoRaWAN uplink of ``app_bytes`` application bytes at EU868 ``dr``.

    TX for the time on air at ``module.tx_ma``; receive windows at ``module.rx_ma`` (one, RX1,
    for a confirmed uplink acked there; RX1 and RX2 for an unconfirmed one); and the ESP32
    while the modem works: ``wait`` "awake" (40 mA until the modem reports the result, as
    ``drivers.atmodem.ATModem.send`` blocks: the firmware before it napped), "light" (what
    ``firmware/app/links/lorawan.py`` does: awake for one UART read timeout once the modem
    has accepted the uplink, light sleep until ``NAP_MARGIN_S`` before RX1 can open, then
    awake until the report), "none" (the ESP32 sleeps once the command is written, as in
    worked example B). Both waking modes add the driver's linger for a downlink line
    (``module.linger_s``) after the report."""
    if wait not in WAITS:
        raise ValueError("wait must be one of %s, got %r" % (", ".join(WAITS), wait))
    sf, bw, _ = airtime.DR_EU868[dr]
    toa_s = airtime.time_on_air_ms(airtime.app_payload_to_phy(app_bytes), sf, bw) / 1000.0
    windows = 1 if confirmed else 2
    phases = [Phase("LoRa TX %d B DR%d" % (app_bytes, dr), toa_s, module.tx_ma, share=share),
              Phase("LoRa RX window x%d" % windows, windows * RX_WINDOW_S, module.rx_ma, share=share)]
    until_s = toa_s + (RECEIVE_DELAY1_S if confirmed else RECEIVE_DELAY2_S) + RX_WINDOW_S + module.linger_s
    if wait == "awake":
        phases.append(Phase("ESP32 waits for the modem", until_s, ESP32_AWAKE_MA, True, share))
    elif wait == "light":  # asleep from the modem's acceptance to just before RX1 can open
        nap_s = toa_s + RECEIVE_DELAY1_S - NAP_MARGIN_S - MODEM_UART_TIMEOUT_S
        phases.append(Phase("ESP32 light-sleeps until RX1", nap_s, ESP32_LIGHT_SLEEP_MA, False, share, True))
        phases.append(Phase("ESP32 awake for the modem's report", until_s - nap_s, ESP32_AWAKE_MA, True, share))
    return phases


def mqtt_phases(tls=True, share=1.0):
    """Wi-Fi association + DHCP + MQTT publish (REFERENCE §5), TLS adding ~1 s."""
    seconds = WIFI_PUBLISH_S + (TLS_EXTRA_S if tls else 0.0)
    return [Phase("Wi-Fi + MQTT publish" + (" (TLS)" if tls else ""), seconds, WIFI_MA, True, share)]


def serial_phases(nbytes, baudrate=115200, share=1.0):
    """The frame's bytes on the UART (10 bits a byte) with the ESP32 awake: negligible."""
    return [Phase("UART %d B" % nbytes, nbytes * 10.0 / baudrate, ESP32_AWAKE_MA, True, share)]


# ---- sensors -------------------------------------------------------------------------------

def esp32_wait(name, seconds, nap=False, share=1.0):
    """The ESP32 waiting ``seconds`` for a part: awake at 40 mA, or (``nap``) in light sleep
    at 0.8 mA, as the firmware's ``NappingClock`` does on a deep-sleeping node."""
    if nap:
        return Phase(name + " (ESP32 light sleep)", seconds, ESP32_LIGHT_SLEEP_MA, False, share, True)
    return Phase(name + " (ESP32 awake)", seconds, ESP32_AWAKE_MA, True, share)


def sensor_phases(sensor, rail_gated=False, nap=False):
    """``(phases, continuous_ma)`` for one sensor entry of a profile (its ``part`` and
    settings); ``nap``: the ESP32 light-sleeps through the part's waits (``esp32_wait``).
    Raises ``ValueError`` for a part or setting REFERENCE gives no timing for."""
    part = sensor.get("part")
    name = sensor.get("name", part)
    if part == "tmp117":
        avg = sensor.get("averaging", 8)
        if avg not in TMP117_CONVERSION_S:
            raise ValueError("tmp117 averaging %r: REFERENCE §2.2 times only 1x and 8x" % (avg,))
        return [esp32_wait("%s TMP117 one-shot %dx" % (name, avg), TMP117_CONVERSION_S[avg], nap)], 0.0
    if part == "i2cxl":
        pings = sensor.get("repeats", 5)
        return [esp32_wait("%s I2CXL %d pings" % (name, pings), pings * SONAR_PING_S, nap),
                Phase("%s I2CXL ranging" % name, pings * SONAR_PING_S, SONAR_MA)], 0.0
    if part == "ads1115":
        from drivers.ads1115_core import single_shot_ms  # what the driver waits per conversion

        sps = sensor.get("data_rate_sps", 8)
        return [esp32_wait("%s ADS1115 2 conversions at %d SPS" % (name, sps),
                           2 * single_shot_ms(sps) / 1000.0, nap)], 0.0
    if part == "scd4x":
        mode = sensor.get("mode", "periodic")
        if mode == "periodic":
            return [Phase("%s SCD41 read" % name, SCD41_READ_S, ESP32_AWAKE_MA, True)], SCD41_PERIODIC_MA
        if mode == "single_shot":
            shot_mas = SCD41_SHOT_MJ / SUPPLY_V       # mJ / V = mA·s
            return [esp32_wait("%s SCD41 single shot" % name, SCD41_SHOT_S, nap),
                    Phase("%s SCD41 shot" % name, SCD41_SHOT_S, shot_mas / SCD41_SHOT_S)], \
                (0.0 if rail_gated else SCD41_IDLE_MA)
        raise ValueError("scd4x mode %r: modelled are periodic and single_shot" % (mode,))
    raise ValueError("sensor part %r has no energy model" % (part,))


def sleep_current_ua(sleep="deep", build="module", modem=None):
    """Sleep current in µA: ``build`` "module" (bare ESP32 module + low-Iq regulator + battery
    divider, plus ``modem``'s sleep current) or "devboard" (a development board's own 1 mA,
    REFERENCE §5's best case). A light-sleeping node adds the ESP32's 0.8 mA."""
    chip = ESP32_DEEP_SLEEP_UA if sleep == "deep" else ESP32_LIGHT_SLEEP_MA * 1000.0
    if build == "module":
        board = REGULATOR_IQ_UA + DIVIDER_UA
    elif build == "devboard":
        board = DEV_BOARD_SLEEP_MA * 1000.0
    else:
        raise ValueError("build must be 'module' or 'devboard', got %r" % (build,))
    return chip + board + (modem.sleep_ua if modem is not None and modem.sleep_ua else 0.0)


def batch_wakes(profile, interval_s=None):
    """Wakes per sending wake: ``link.lorawan.max_delay_s // interval_s + 1``, the rule of
    ``firmware/app/links/lorawan.py`` (``LoRaWANLink.batch_wakes``; 1 without batching)."""
    interval = interval_s or profile["profile"]["interval_s"]
    return profile.get("link", {}).get("lorawan", {}).get("max_delay_s", 0) // interval + 1


def records_per_wake(profile, interval_s=None):
    """Records a wake logs: 1, or interval / mean_period_s for a node that logs means."""
    interval = interval_s or profile["profile"]["interval_s"]
    mean_s = profile["profile"].get("mean_period_s") or 0
    return min(1.0, float(interval) / mean_s) if mean_s else 1.0


def profile_cycle(profile, link, uplink_bytes, readings_per_uplink=None, module="rak3172", wait="light",
                  build=None, dr=None, interval_s=None, status=True, nap=None):
    """The ``Cycle`` of a profile (the dict of ``hardware/profiles/<id>.toml``) on ``link``.

    ``uplink_bytes``: the size of one message (LoRaWAN app payload, MQTT/serial frame) carrying
    ``readings_per_uplink`` records; None: on LoRaWAN, what a sending wake of the profile's
    batching carries (``batch_wakes`` × ``records_per_wake``, at least 1), elsewhere 1. A node that logs a
    mean every ``mean_period_s`` makes one record per that many seconds, so its messages are
    shared over the wakes in between. ``wait``: the ESP32 during a LoRaWAN uplink
    (``lorawan_phases``; "light" as built). ``status``: on LoRaWAN, a status record every
    ``status_every_n_cycles`` in an uplink of its own that fills the data rate's payload.
    ``build`` defaults to "module" on battery and "devboard" on mains; ``dr`` to the
    profile's ``link.lorawan.data_rate``; ``interval_s`` to the profile's; ``nap`` (the
    ESP32 light-sleeps through the sensors' waits and the rail's settle) to what the firmware
    does: on a deep-sleeping node."""
    prof, power = profile["profile"], profile.get("power", {})
    interval = interval_s or prof["interval_s"]
    if readings_per_uplink is None:  # a node logging means sends when one is logged, at most
        readings_per_uplink = max(1.0, batch_wakes(profile, interval) * records_per_wake(profile, interval)) \
            if link == "lorawan" else 1
    sleep = power.get("sleep", "deep")
    build = build or ("module" if power.get("source") == "battery" else "devboard")
    gated = bool(power.get("rail_gated"))
    nap = (sleep == "deep") if nap is None else nap
    phases = []
    if sleep == "deep":
        phases.append(Phase("ESP32 boot", ESP32_BOOT_S, ESP32_AWAKE_MA, True))
    if gated and power.get("rail_settle_ms"):
        phases.append(esp32_wait("sensor rail settles", power["rail_settle_ms"] / 1000.0, nap))
    continuous = 0.0
    for sensor in profile.get("sensors", ()):
        ph, cont = sensor_phases(sensor, gated, nap)
        phases += ph
        continuous += cont
    phases.append(Phase("application (encode, log, link commands)", ESP32_APP_S, ESP32_AWAKE_MA, True))
    share = records_per_wake(profile, interval) / readings_per_uplink
    modem = None
    if link == "lorawan":
        modem = MODULES[module]
        lw = profile.get("link", {}).get("lorawan", {})
        dr = lw.get("data_rate", 5) if dr is None else dr
        phases += lorawan_phases(uplink_bytes, dr, modem, lw.get("confirmed", True), wait, share)
        every = prof.get("status_every_n_cycles") or 0
        if status and every:
            for p in lorawan_phases(airtime.max_app_payload(dr), dr, modem, lw.get("confirmed", True), wait,
                                    share=1.0 / every):
                p.name = "status record: " + p.name
                phases.append(p)
    elif link == "mqtt":
        phases += mqtt_phases(profile.get("link", {}).get("mqtt", {}).get("tls", True), share)
    elif link == "serial":
        phases += serial_phases(uplink_bytes, share=share)
    else:
        raise ValueError("link must be serial, mqtt or lorawan, got %r" % (link,))
    if gated and sleep == "deep":  # the rail is on from after the boot until the deep sleep
        on_s = sum(p.seconds * p.share for p in phases if p.esp32 and p.name != "ESP32 boot")
        phases.append(Phase("rail bleeder R8 while the rail is on", on_s, RAIL_BLEEDER_MA))
    return Cycle(phases, interval, sleep_current_ua(sleep, build, modem), continuous)


# ---- REFERENCE §5's worked examples (one uplink per 15 min) ----------------------------------

EXAMPLE_INTERVAL_S = 900


def example_a():
    """Worked example A: Wi-Fi + MQTT, 0.3 s @ 40 mA + 2 s @ 120 mA, sleep 15 µA."""
    return Cycle([Phase("ESP32 boot", ESP32_BOOT_S, ESP32_AWAKE_MA, True)] + mqtt_phases(tls=False),
                 EXAMPLE_INTERVAL_S, 15.0)


def example_b(dr=5):
    """Worked example B: ESP32 0.5 s @ 40 mA + TX of an 11-byte payload @ 70 mA + 2 RX windows
    of 50 ms @ 17 mA (an unconfirmed uplink the ESP32 does not wait for), sleep 17 µA.
    ``dr`` 5 is SF7 (the example), 0 is SF12 (its last row)."""
    phases = [Phase("ESP32 awake", ESP32_BOOT_S + ESP32_APP_S, ESP32_AWAKE_MA, True)]
    phases += lorawan_phases(11, dr, MODULES["example-b"], confirmed=False, wait="none")
    return Cycle(phases, EXAMPLE_INTERVAL_S, 17.0)


def interval_for_life(cycle, battery, target_years, self_discharge=True):
    """The shortest wake interval (s, rounded up) at which ``cycle``'s charge per wake lasts
    ``target_years`` on ``battery``; ``math.inf`` if sleep and self-discharge alone drain it
    sooner."""
    budget_ma = battery.usable_mah / (target_years * HOURS_PER_YEAR)
    spare = budget_ma - cycle.sleep_ua / 1000.0 - cycle.continuous_ma \
        - (battery.self_discharge_ma if self_discharge else 0.0)
    if spare <= 0:
        return math.inf
    return math.ceil(cycle.charge_mas / spare)
