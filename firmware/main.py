"""The node's composition root: the only place that reads configuration, picks hardware and
wires the objects together (ARCHITECTURE.md "Contracts"). Runs at every reset.

Order: validate the configuration once (a bad file is reported, never looped on) → persistent
state: a new boot epoch before anything is logged, except on a deep-sleep wake whose RTC
memory says where the epoch's seqs stood (``NodeState.resume``) → buses, sensors, link → wake cycles;
between cycles deep sleep (battery: RTC memory carries ``Node.persist``) or light sleep
(mains: the loop goes on). The watchdog is fed around every step that can block.
"""

import gc
import json
import os

import machine

_CONFIG_ERROR_SLEEP_MS = 3600 * 1000  # a bad config is reported, then the node waits an hour
_RTC_MAX = 2000
_REASONS = {
    machine.PWRON_RESET: "power_on", machine.HARD_RESET: "hard_reset", machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep", machine.SOFT_RESET: "soft_reset",
}


def _path(root, name):
    return root.rstrip("/") + "/" + name


def _report_config_error(root, err):
    """Print it on the console and leave it on flash for ``civicedge console``; never loop."""
    text = "CONFIG ERROR: %s" % err
    print(text)
    try:
        with open(_path(root, "error.txt"), "w") as f:
            f.write(text + "\n")
    except OSError:
        pass
    machine.deepsleep(_CONFIG_ERROR_SLEEP_MS)


def _rtc_load(rtc):
    try:
        data = rtc.memory()
        return json.loads(data) if data else {}
    except ValueError:
        return {}


def _rtc_save(rtc, persist):
    data = json.dumps(persist)
    if len(data) > _RTC_MAX:  # never fail a sleep over it: the checker's memory is optional
        persist.pop("q", None)
        data = json.dumps(persist)
    rtc.memory(data.encode())


def _make_link(cfg, secrets, clock, feed, root):
    link = cfg["link"]
    kind = link["type"]
    if kind == "serial":
        from app.links.serial import SerialLink

        u = link["uart"]
        uart = machine.UART(u["id"], baudrate=u["baudrate"], tx=u["tx_pin"], rx=u["rx_pin"], timeout=20)
        s = link["serial"]
        return SerialLink(uart, clock, cfg["device_id"], secrets.device_key, feed=feed,
                          ack_timeout_ms=s["ack_timeout_ms"], max_batch_records=s["max_batch_records"])
    if kind == "mqtt":
        from app.links.mqtt import MQTTLink

        return MQTTLink(cfg, secrets, clock, feed=feed, root=root)
    from app.links.lorawan import LoRaWANLink

    u = link["uart"]
    uart = machine.UART(u["id"], baudrate=u["baudrate"], tx=u["tx_pin"], rx=u["rx_pin"], timeout=20)
    # the ESP32 light-sleeps while the radio waits for its receive window (app/links/lorawan.py)
    return LoRaWANLink(uart, cfg, secrets, clock, feed=feed, root=root, nap=machine.lightsleep)


def _bus_recovery(cfg):
    """``recover(bus_id)``: the I2C-bus specification's recovery for a slave holding SDA low
    (RELIABILITY.md): nine SCL clocks as a GPIO, a STOP, then the peripheral re-initialised."""
    by_id = {}
    for b in cfg["i2c"]:
        by_id[b["id"]] = b

    def recover(bus_id):
        b = by_id[bus_id]
        od = machine.Pin.OPEN_DRAIN
        scl = machine.Pin(b["scl_pin"], od, value=1)
        sda = machine.Pin(b["sda_pin"], od, value=1)
        for _ in range(9):
            scl.value(0)
            scl.value(1)
        sda.value(0)  # STOP: SDA rises while SCL is high
        sda.value(1)
        # the ESP32 port returns the same object per bus id and re-initialises the peripheral
        machine.I2C(b["id"], scl=machine.Pin(b["scl_pin"]), sda=machine.Pin(b["sda_pin"]),
                    freq=b["freq_hz"], timeout=b["timeout_us"])

    return recover


def _battery_reader(cfg):
    b = cfg.get("battery")
    if not b:
        return None
    # 11 dB attenuation: ~0-3.9 V full scale (the 0 dB default clips at ~1.1 V)
    adc = machine.ADC(machine.Pin(b["adc_pin"]), atten=machine.ADC.ATTN_11DB)
    ratio = b["divider_ratio"]
    return lambda: adc.read_uv() / 1e6 * ratio


def _sleep(clock, ms, deep, rtc, node, wdt, watchdog_ms):
    if deep:
        node.persist["seq"] = node.state.position()
        _rtc_save(rtc, node.persist)
        machine.deepsleep(ms)
    # light sleep in slices the watchdog outlives, feeding it between them
    step = max(1000, watchdog_ms // 2)
    while ms > 0:
        wdt.feed()
        machine.lightsleep(min(ms, step))
        ms -= step


def main():
    root = os.getcwd() or "/"
    from app.clock import MicroClock

    clock = MicroClock()
    from app.startup import collect_deep, configure  # config.json + overrides + secrets

    got, err = configure(root)
    if err is not None:
        _report_config_error(root, err)
        return
    cfg, secrets = got
    got = None
    collect_deep()  # the validator, released by configure, really goes (app/startup.py)

    wdt = machine.WDT(timeout=cfg["watchdog_ms"])
    from app.state import NodeState
    from app.store import RecordLog

    state = NodeState(root)
    log = RecordLog(root, cfg["log"]["max_bytes"], clock=clock, state=state,
                    segment_bytes=cfg["log"]["segment_bytes"])
    cause = machine.reset_cause()
    rtc = machine.RTC()
    persist = _rtc_load(rtc) if cause == machine.DEEPSLEEP_RESET else {}
    position = persist.get("seq")
    if isinstance(position, list) and len(position) == 2:  # a wake: the epoch goes on
        state.resume(position[0], position[1], _REASONS.get(cause, "unknown"), log.max_epoch())
    else:
        state.boot(_REASONS.get(cause, "unknown"), log.max_epoch())

    rail = cfg.get("rail")
    if rail:
        pin = machine.Pin(rail["pin"], machine.Pin.OUT)
        pin.value(0 if rail["active_low"] else 1)
        clock.sleep_ms(rail["settle_ms"])
    buses = {}
    for b in cfg["i2c"]:
        buses[b["id"]] = machine.I2C(b["id"], scl=machine.Pin(b["scl_pin"]), sda=machine.Pin(b["sda_pin"]),
                                     freq=b["freq_hz"], timeout=b["timeout_us"])
    from app.node import Node
    from app.sensors import Sampler, build_sensors

    sampler = Sampler(build_sensors(cfg["sensors"], buses, clock), clock, cfg["quality"], persist.get("q"),
                      persist.get("sc"), _bus_recovery(cfg))
    sampler.prepare(clock.ticks_ms() if cause == machine.PWRON_RESET and not rail else None)
    link = _make_link(cfg, secrets, clock, wdt.feed, root)
    node = Node(cfg, clock, state, log, sampler, link, persist, _battery_reader(cfg), wdt.feed)
    deep = cfg["power"]["sleep"] == "deep"
    opened = False
    while True:
        started = clock.ticks_ms()
        if not opened:
            opened = link.open()
        node.cycle()
        gc.collect()
        left = cfg["interval_s"] * 1000 - clock.ticks_diff(clock.ticks_ms(), started)
        _sleep(clock, max(0, left), deep, rtc, node, wdt, cfg["watchdog_ms"])


main()
