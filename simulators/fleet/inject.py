"""The scenario's faults, put into the run: what each kind does, and when.

Faults that the simulated parts model themselves are attached before the run with their
window on the virtual clock: ``stuck_i2c`` (``stuck_bus`` on the node's bus),
``failing_sensor`` (a device fault on the node's first sensor, or the one carrying
``quantity``), ``lora_interference`` (``Radio.jam``). The others are actions the runner's
director takes at their start and end time (``actions``): the council's broker unreachable
(``broker_outage``), the gateway's process killed and restarted (``gateway_power_cut``),
its outbox capped at its size (``gateway_disk_full``), a node's process killed and
restarted (``node_power_cut``; ``during = "flash_write"`` kills it a few real milliseconds
after its next wake, in the middle of its cycle's flash writes, instead of asleep), and a
clock stepped (``clock_jump``, a gateway's wall clock or a node's RTC).
"""

import random

from simulators.atmodem_radio import CHANNELS_HZ
from simulators.fleet.nodes import profile_table


# The part that measures each quantity (hardware/profiles/*.toml [[sensors]] parts).
_PARTS_BY_QUANTITY = {"co2_ppm": "scd4x", "rh_percent": "scd4x", "no2_ppb": "ads1115",
                      "distance_cm": "i2cxl", "temperature_c": "tmp117"}


def _sensor_address(node, quantity):
    """The bus address of the node's sensor for ``quantity`` (None: its first sensor)."""
    sensors = profile_table(node.spec.profile)["sensors"]
    part = _PARTS_BY_QUANTITY.get(quantity)
    return next((s["address"] for s in sensors if s["part"] == part), sensors[0]["address"])


def attach(faults, nodes, radio):
    """Attach the modelled faults (module docstring) to ``nodes`` ({id: FleetNode}) and
    ``radio`` (None without LoRaWAN)."""
    for f in faults:
        end = f.end_s
        if f.kind == "stuck_i2c":
            for n in f.targets:
                nodes[n].server.rig.fault(None, {"kind": "stuck_bus", "start_s": f.start_s, "end_s": end})
        elif f.kind == "failing_sensor":
            mode = f.params.get("mode", "nack")
            spec = {"kind": mode, "start_s": f.start_s, "end_s": end}
            if mode in ("drift", "spike"):
                spec["magnitude"] = float(f.params.get("magnitude", 0.0))
            if f.params.get("quantity") and mode != "nack":
                spec["quantity"] = f.params["quantity"]
            for n in f.targets:
                nodes[n].server.rig.fault(_sensor_address(nodes[n], f.params.get("quantity")), spec)
        elif f.kind == "lora_interference" and radio is not None:
            mhz = f.params.get("channel_mhz")
            freqs = [int(round(mhz * 1e6))] if mhz else list(CHANNELS_HZ)
            for hz in freqs:
                radio.jam(hz, f.start_s, end, gateways=list(f.targets))


def actions(faults, seed):
    """``[(at_s, order, description, callable(run))]`` for the director, in time order."""
    out = []
    rng = random.Random(seed)
    for i, f in enumerate(faults):
        k, targets = f.kind, list(f.targets)
        if k == "broker_outage":
            out.append((f.start_s, i, "council broker unreachable from %s" % ", ".join(targets),
                        lambda run, t=targets: [run.brokers.outage(g, True) for g in t]))
            out.append((f.end_s, i, "council broker back for %s" % ", ".join(targets),
                        lambda run, t=targets: [run.brokers.outage(g, False) for g in t]))
        elif k == "gateway_power_cut":
            out.append((f.start_s, i, "power cut: %s" % ", ".join(targets),
                        lambda run, t=targets: [run.gateways[g].kill() for g in t]))
            out.append((f.end_s, i, "power back: %s" % ", ".join(targets),
                        lambda run, t=targets: [run.gateways[g].start() for g in t]))
        elif k == "gateway_disk_full":
            out.append((f.start_s, i, "disk full: %s" % ", ".join(targets),
                        lambda run, t=targets: [run.gateways[g].command("disk_full") for g in t]))
            out.append((f.end_s, i, "disk space back: %s" % ", ".join(targets),
                        lambda run, t=targets: [run.gateways[g].command("disk_ok") for g in t]))
        elif k == "node_power_cut":
            mid = f.params.get("during", "any") == "flash_write"
            delays = {n: rng.uniform(0.002, 0.030) for n in targets}
            out.append((f.start_s, i, "power cut: %s" % ", ".join(targets),
                        lambda run, t=targets, d=delays, m=mid: [run.cut_node(n, d[n] if m else None) for n in t]))
            out.append((f.end_s, i, "power back: %s" % ", ".join(targets),
                        lambda run, t=targets: [run.restore_node(n) for n in t]))
        elif k == "clock_jump":
            jump = float(f.params["jump_s"] if "jump_s" in f.params else f.params["jump"])
            out.append((f.start_s, i, "clock jump %+d s: %s" % (jump, ", ".join(targets)),
                        lambda run, t=targets, j=jump, g=f.target_kind == "gateway": [
                            run.jump_clock(x, j, g) for x in t]))
    out.sort(key=lambda a: (a[0], a[1]))
    return out
