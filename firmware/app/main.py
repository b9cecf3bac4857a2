"""The node's composition root: the only place that reads configuration, picks hardware and
wires the objects together (ARCHITECTURE.md "Contracts"). ``main.py`` on the flash is a
two-line stub that calls ``main()`` here at every reset: this module ships precompiled
(``app/main.mpy``), so the node compiles no source at boot — compiling was the boot's heap
peak (docs/benchmarks.md, heap).

Order: validate the configuration once (a bad file is reported, never looped on) → the
watchdog and the link, made before anything else is loaded, while the heap is still in one
piece (an MQTT node's TLS context and frame buffer need blocks of 1-3 KB that the later
loading would leave in pieces: docs/benchmarks.md, heap); making a link talks to no device and
reads no state (a serial link's UART is configured, a CA file read; the link opens in the
wake cycle, and a LoRaWAN link loads its modem's driver and opens its UART only then, so a
wake that holds its readings does neither) →
persistent state: a new boot epoch before anything is logged, except on a deep-sleep wake (or
a restart for a configuration change) whose RTC memory says where the epoch's seqs stood
(``NodeState.resume``) → the sensor rail, buses, sensors → wake cycles; between cycles
deep sleep (battery: RTC memory carries ``Node.persist``) or light sleep (mains: the loop goes
on). The watchdog is fed around every step that can block.

A deep-sleeping (battery) node's sensors wait in light sleep (``app.clock.NappingClock``): the
TMP117's conversion, the sonar's pings, the rail's settle time cost ~0.8 mA instead of ~40 mA
(``simulators/energy.py``). A light-sleeping (mains) node never boots again by itself, so a
configuration change received by downlink (``app.downlink.receive``, applied by the boot's
``app.startup.configure``) would wait for ever: after the cycle that received one it sleeps out
the interval as usual, keeps ``Node.persist`` in RTC memory with a ``restart`` mark and
restarts the interpreter (``machine.soft_reset``); the new boot applies the change and goes on
in the same boot epoch, as a deep-sleep wake does.
"""

import gc
import json
import os
import sys

import machine
from drivers import keep_if_room

_CONFIG_ERROR_SLEEP_MS = 3600 * 1000  # a bad config is reported, then the node waits an hour
_RTC_MAX = 2000
# A mains node that keeps its code (heap to spare: drivers.keep_if_room) collects explicitly only
# every this many cycles: the collection (and gc.mem_free's walk of the heap) is then most of a
# cycle's garbage-collector time, and gc.threshold still collects whenever the allocations call
# for it. A node with a tight heap collects after every cycle, as every battery node does.
_SPARE_COLLECT_EVERY = 16
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


def _make_link(cfg, secrets, clock, feed, root, hw):
    kind = cfg["link"]["type"]
    if kind == "serial":
        from app.links.serial import SerialLink

        s = cfg["link"]["serial"]
        return SerialLink(hw.link_uart(cfg), clock, cfg["device_id"], secrets.device_key, feed=feed,
                          ack_timeout_ms=s["ack_timeout_ms"], max_batch_records=s["max_batch_records"])
    if kind == "mqtt":
        from app.links.mqtt import MQTTLink

        return MQTTLink(cfg, secrets, clock, feed=feed, root=root)
    from app.links.lorawan import LoRaWANLink

    # the ESP32 light-sleeps while the radio waits for its receive window (app/links/lorawan.py);
    # the UART is opened by the link's first exchange with the modem (module docstring)
    return LoRaWANLink(lambda: hw.link_uart(cfg), cfg, secrets, clock, feed=feed, root=root,
                       nap=machine.lightsleep)


def _change_pending():
    """True if a downlink kept a configuration change this boot (``app.downlink``)."""
    mod = sys.modules.get("app.downlink")
    return mod is not None and getattr(mod, "kept", False)


def _sleep(clock, ms, deep, rtc, node, wdt, watchdog_ms):
    if deep:
        node.persist["seq"] = node.state.position()
        _rtc_save(rtc, node.persist)
        # deepsleep(0) arms no timer on an ESP32 (asleep until a power cycle): a cycle that
        # outlasted its interval wakes again at once instead
        machine.deepsleep(max(ms, 1))
    # light sleep in slices the watchdog outlives, feeding it between them
    step = max(1000, watchdog_ms // 2)
    while ms > 0:
        wdt.feed()
        machine.lightsleep(min(ms, step))
        ms -= step
    if _change_pending():  # only a boot applies it: restart, keeping the epoch (module docstring)
        node.persist["seq"] = node.state.position()
        node.persist["restart"] = 1
        _rtc_save(rtc, node.persist)
        machine.soft_reset()


def _persisted(rtc, cause):
    """``(persist, restarted)``: RTC memory's ``Node.persist`` after a deep-sleep wake or a
    restart for a configuration change, else ``{}``. A restart's mark is cleared at once, so
    a later reset of another kind can never resume from it."""
    persist = _rtc_load(rtc)
    if not isinstance(persist, dict):
        persist = {}
    restarted = persist.pop("restart", None) == 1
    if restarted:
        rtc.memory(b"")
    return (persist if restarted or cause == machine.DEEPSLEEP_RESET else {}), restarted


def main():
    root = os.getcwd() or "/"
    from app.clock import MicroClock, NappingClock

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
    from app import hw

    link = _make_link(cfg, secrets, clock, wdt.feed, root, hw)  # first: the heap is in one piece (docstring)
    from app.state import NodeState
    from app.store import RecordLog

    state = NodeState(root)
    log = RecordLog(root, cfg["log"]["max_bytes"], clock=clock, state=state,
                    segment_bytes=cfg["log"]["segment_bytes"])
    cause = machine.reset_cause()
    rtc = machine.RTC()
    persist, restarted = _persisted(rtc, cause)
    position = persist.get("seq")
    reason = "restart" if restarted else _REASONS.get(cause, "unknown")
    if isinstance(position, list) and len(position) == 2:  # a wake: the epoch goes on
        state.resume(position[0], position[1], reason, log.max_epoch())
    else:
        state.boot(reason, log.max_epoch())

    deep = cfg["power"]["sleep"] == "deep"
    sensor_clock = NappingClock(machine.lightsleep) if deep else clock
    rail = hw.Rail(cfg, sensor_clock.sleep_ms) if cfg.get("rail") else None
    if rail:
        rail.on()
    buses = hw.make_buses(cfg)
    from app.node import Node
    from app.sensors import Sampler, build_sensors

    sampler = Sampler(build_sensors(cfg["sensors"], buses, sensor_clock), sensor_clock, cfg["quality"],
                      persist.get("q"), persist.get("sc"), hw.bus_recovery(cfg), rail.cycle if rail else None)
    sampler.prepare(clock.ticks_ms() if cause == machine.PWRON_RESET and not rail and not restarted else None)
    node = Node(cfg, clock, state, log, sampler, link, persist, hw.battery_reader(cfg), wdt.feed)
    opened = False
    spare = False  # a mains node with heap to spare (it keeps its on-demand code)
    uncollected = 0  # cycles since the last explicit collection
    while True:
        started = clock.ticks_ms()
        if not opened:  # (a deep-sleep MQTT link connects in deliver(), once its frame is built)
            opened = getattr(link, "late_open", False) or link.open()
        node.cycle()
        uncollected += 1
        if deep or not spare or uncollected >= _SPARE_COLLECT_EVERY:
            gc.collect()
            uncollected = 0
            if not deep:  # drivers.keep_if_room returns whether it still releases
                spare = not keep_if_room(gc.mem_free())
        left = cfg["interval_s"] * 1000 - clock.ticks_diff(clock.ticks_ms(), started)
        _sleep(clock, max(0, left), deep, rtc, node, wdt, cfg["watchdog_ms"])
