"""The node's self-test, run on the board after flashing (``civicedge flash`` executes
``import app.selftest; app.selftest.run()`` over the raw REPL): is this board, as wired,
the node its configuration describes?

Theory of operation
-------------------
Checks, in order, each printed as one line ``SELFTEST {json}`` as soon as it is known (so a
slow check shows progress) — ``check`` (its kind), ``ok``, ``name`` and details:

1. ``config``: ``config.json`` and ``secrets.json`` validate (``app.config``); a failure
   stops the test (nothing else can be built). ``firmware``: the node's persistent state
   (``app.state``): how many times the firmware has booted, and why last — read only.
2. ``i2c``: each configured bus is scanned (after switching a gated sensor rail on and
   waiting its settle time, as ``app/main.py`` does); ``found`` lists the addresses that ACK.
3. ``sensor``: one per configured sensor: missing from its bus's scan fails with
   "<name> (<part>) not found at 0x62 on I2C bus 0"; otherwise one reading through the
   firmware's own ``Sampler`` (the same drivers, retries and quality rules as a wake cycle),
   failing when the sensor yields ``sensor_failed``.
4. ``battery`` (if monitored): the voltage, reported.
5. ``link``: the link as the node opens it — mqtt: WiFi association and the broker accepting
   the node's credentials; lorawan: the modem answers and has (or makes) a network session;
   serial: the UART opens (whether a gateway acks is seen on the node's first cycle).

The last line is ``SELFTEST-END {"ok": bool, "firmware_version": ...}``. ``ok`` is false
when any check failed. The watchdog (``machine.WDT`` with the node's ``watchdog_ms``; on the
ESP32 it cannot be stopped once the firmware has started it) is fed between checks.
Nothing is written to the flash: the node's state and record log are left as they are.
"""

import gc
import json
import os

import machine


def _say(check, ok, **detail):
    detail["check"] = check
    detail["ok"] = ok
    print("SELFTEST " + json.dumps(detail))
    return ok


def _link_check(cfg, secrets, clock, feed, root):
    from app import hw

    kind = cfg["link"]["type"]
    if kind == "serial":
        u = cfg["link"]["uart"]
        hw.link_uart(cfg).deinit()
        return True, "UART%d open at %d baud" % (u["id"], u["baudrate"])
    if kind == "mqtt":
        from app.links.mqtt import MQTTLink

        link = MQTTLink(cfg, secrets, clock, feed=feed, root=root)
        ok = link.open()
        c = link.counters
        link.close()
        if ok:
            return True, "broker %s:%d accepted the node" % (cfg["link"]["mqtt"]["host"], cfg["link"]["mqtt"]["port"])
        why = [k for k in ("wifi_fails", "tls_fails", "mqtt_refused", "mqtt_fails") if c.get(k)]
        return False, "not connected (%s)" % (", ".join(why) or "no reason recorded")
    from app.links.lorawan import LoRaWANLink

    link = LoRaWANLink(hw.link_uart(cfg), cfg, secrets, clock, feed=feed, root=root)
    ok = link.open()
    return ok, "joined" if ok else "no network session (modem errors: %d)" % link.counters.get("link_errors", 0)


def run():
    """Run every check; returns True if all passed (and prints the lines above)."""
    from app.clock import MicroClock

    clock = MicroClock()
    root = os.getcwd() or "/"  # as app/main.py: "/" on the ESP32
    from app import config

    try:
        cfg = config.load_config(root.rstrip("/") + "/config.json")
        secrets = config.load_secrets(root.rstrip("/") + "/secrets.json", cfg)
    except config.ConfigError as e:
        _say("config", False, detail=str(e))
        print("SELFTEST-END " + json.dumps({"ok": False, "firmware_version": None}))
        return False
    _say("config", True, device_id=cfg["device_id"], profile=cfg["profile"], link=cfg["link"]["type"])
    config.release()
    del config
    gc.collect()
    from app.state import NodeState

    st = NodeState(root)
    _say("firmware", True, boot_count=st.boot_count, boot_reason=st.boot_reason, boot_epoch=st.boot_epoch,
         version=cfg.get("firmware_version"))
    st = None
    wdt = machine.WDT(timeout=cfg["watchdog_ms"])
    feed = wdt.feed
    all_ok = True

    from app import hw

    if cfg.get("rail"):
        hw.Rail(cfg, clock.sleep_ms).on()
    buses, found = hw.make_buses(cfg), {}
    for b in cfg["i2c"]:
        bus = buses[b["id"]]
        try:
            found[b["id"]] = bus.scan()
            _say("i2c", True, name="bus %d" % b["id"], found=found[b["id"]])
        except OSError as e:
            found[b["id"]] = []
            all_ok = _say("i2c", False, name="bus %d" % b["id"], detail="scan failed: %r" % (e,)) and all_ok
    feed()

    from app.sensors import Sampler, build_sensors
    from protocol.quality import SENSOR_FAILED

    present = [s for s in cfg["sensors"] if s["address"] in found.get(s["bus"], ())]
    for s in cfg["sensors"]:
        if s not in present:
            all_ok = _say("sensor", False, name=s["name"], part=s["part"], bus=s["bus"], address=s["address"],
                          detail="%s (%s) not found at 0x%02x on I2C bus %d" % (
                              s["name"], s["part"], s["address"], s["bus"])) and all_ok
    # A sensor that needs another one's temperature (NO2, sonar) is read even if that one is
    # missing: the firmware then flags or skips the correction itself.
    sensors = build_sensors(present, buses, clock)
    sampler = Sampler(sensors, clock, cfg["quality"])
    sampler.prepare(0)  # wait out every part's power-up time, as after a power-on
    feed()
    values = sampler.sample()
    feed()
    i = 0
    for sensor in sensors:
        got = values[i:i + len(sensor.quantities)]
        i += len(sensor.quantities)
        failed = [q for q, v, f in got if f == SENSOR_FAILED]
        spec = sensor.spec
        if failed:
            all_ok = _say("sensor", False, name=spec["name"], part=spec["part"], bus=spec["bus"],
                          address=spec["address"], detail="%s (%s) at 0x%02x gave no reading" % (
                              spec["name"], spec["part"], spec["address"])) and all_ok
        else:
            _say("sensor", True, name=spec["name"], part=spec["part"], bus=spec["bus"], address=spec["address"],
                 values=[[q, v, f] for q, v, f in got])
    sensors = sampler = values = None
    gc.collect()

    battery = hw.battery_reader(cfg)
    if battery:
        _say("battery", True, name="battery", volts=round(battery(), 3))
    feed()

    try:
        ok, detail = _link_check(cfg, secrets, clock, feed, root)
    except Exception as e:  # noqa: BLE001 (any failure to open the link is this check's result)
        ok, detail = False, "error: %r" % (e,)
    all_ok = _say("link", ok, name=cfg["link"]["type"], detail=detail) and all_ok
    feed()
    print("SELFTEST-END " + json.dumps({"ok": all_ok, "firmware_version": cfg.get("firmware_version")}))
    return all_ok
