"""Test firmware: count boots in RTC memory and in a flash file, then sleep as mode.json says.

mode.json: {"sleep_ms": int, "action": "deepsleep" | "lightsleep" | "end" | "crash" | "reset"
| "soft_reset", "cycles": int (lightsleep: how many)}. One JSON line per boot on stdout.
"""

import json
import time

import machine

imports = 0  # a module global: 1 after every boot, since a reset unloads this module
imports += 1


def _bump_rtc():
    rtc = machine.RTC()
    mem = rtc.memory()
    n = int(mem) + 1 if mem else 1
    rtc.memory(str(n).encode())
    return n


def _bump_flash():
    try:
        with open("boots.txt") as f:
            n = int(f.read()) + 1
    except OSError:
        n = 1
    with open("boots.tmp", "w") as f:
        f.write(str(n))
    import os
    os.rename("boots.tmp", "boots.txt")
    return n


def run(booted_by):
    with open("mode.json") as f:
        mode = json.load(f)
    ticks_at_start = time.ticks_ms()
    record = {"rtc": _bump_rtc(), "flash": _bump_flash(), "imports": imports, "booted_by": booted_by,
              "cause": machine.reset_cause(), "wake": machine.wake_reason(), "ticks_ms": ticks_at_start,
              "time": time.time()}
    action = mode.get("action", "deepsleep")
    if action == "lightsleep":
        t0 = time.ticks_ms()
        for _ in range(mode.get("cycles", 3)):
            machine.lightsleep(mode["sleep_ms"])
        record["slept_ms"] = time.ticks_diff(time.ticks_ms(), t0)
        record["imports_after"] = imports
    print("APP " + json.dumps(record))
    if action in ("deepsleep", "lightsleep"):
        machine.deepsleep(mode["sleep_ms"])
    elif action == "crash":
        raise RuntimeError("crash on purpose")
    elif action == "reset":
        machine.reset()
    elif action == "soft_reset":
        machine.soft_reset()
