"""The scenario's faults, put into the run: what each kind does, and when.

Faults that the simulated parts model themselves are attached before the run with their
window on the virtual clock (a node's clock counts seconds from the scenario's start):
``stuck_i2c`` (``stuck_bus`` on the node's bus: SDA held low, every transaction times out
until the window ends, whatever recovery the firmware tries), ``failing_sensor`` (a device
fault on the node's sensor carrying ``quantity``, else its first sensor: ``nack`` -- the part
does not answer; ``stuck_value`` -- the reading freezes at its value when the fault began;
``drift`` -- it drifts by ``magnitude`` units an hour; ``spike`` -- a reading jumps by
``magnitude`` with probability ``SPIKE_PROBABILITY``, so spikes come and go as a loose
contact's do, rather than the level stepping for the whole window; a NO2 sensor's faults act
on the NO2 its electrode senses, ``_SENSED_INPUTS``), ``lora_interference``
(``Radio.jam`` of the channel, or of every channel, at the target gateways: a frame on air
then is lost at those gateways, and a confirmed uplink no gateway heard goes unacknowledged).
They are logged by the director at their start and end all the same.

The others are actions the runner's director takes at their start and end time
(``actions``): the council's broker unreachable (``broker_outage``), the gateway's process
killed and restarted (``gateway_power_cut``), its outbox capped at its size (a full disk:
SQLite may still reuse the free pages inside the file; ``gateway_disk_full``), a node's
process killed and restarted on the same flash (``node_power_cut``; ``during =
"flash_write"`` cuts it as its first flash write after the window opens reaches the image --
``FleetNode.power_cut_at_write`` -- instead of at once, asleep or not; a node that writes
nothing in the window is not cut), and a clock stepped (``clock_jump``, a
gateway's wall clock or a node's RTC -- ``jump_rtc``: its sensors keep measuring the world at
the true time; their monotonic clocks do not move). ``radio_record`` is the run record's view
of the radio (what the interference did to every frame).

The director takes its actions at barriers (``timeline.py``): every node asleep at or after
the action's time, or parked on the radio, and none released while it acts. ``RadioOrder``
(installed by ``attach``) makes the radio decide frames in virtual start order, whatever
order the nodes' threads send them in (``lorawan_radio``, "Collisions").
"""

import threading

from simulators.atmodem_radio import CHANNELS_HZ
from simulators.fleet.nodes import dev_eui, profile_table

SPIKE_PROBABILITY = 0.3  # a reading's chance of a spike while a failing_sensor "spike" lasts

# The part that measures each quantity (hardware/profiles/*.toml [[sensors]] parts).
_PARTS_BY_QUANTITY = {"co2_ppm": "scd4x", "rh_percent": "scd4x", "no2_ppb": "ads1115",
                      "distance_cm": "i2cxl", "temperature_c": "tmp117"}

# Quantities a part takes from its environment without measuring them itself: the ADS1115
# converts the NO2 electrode's voltages, and its own sensor faults act on pin voltages
# ("ain0_v"...). A sensor fault on one of them acts on what the part senses (as a drifting or
# stuck electrode does): ``_sense_through_faults``.
_SENSED_INPUTS = ("no2_ppb",)


def _sense_through_faults(device, quantity):
    """Make ``device`` sense ``quantity`` through its own sensor faults (``measure``)."""
    source = device._truth  # what rig.setup gave it: the environment model's ``at``

    def sensed(wall_s):
        values = dict(source(wall_s))
        values[quantity] = device.measure(quantity, values[quantity])
        return values
    device.set_truth(sensed)


def _sensor_address(node, quantity):
    """The bus address of the node's sensor for ``quantity`` (None: its first sensor)."""
    sensors = profile_table(node.spec.profile)["sensors"]
    part = _PARTS_BY_QUANTITY.get(quantity)
    return next((s["address"] for s in sensors if s["part"] == part), sensors[0]["address"])


def attach(faults, nodes, radio):
    """Attach the modelled faults (module docstring) to ``nodes`` ({id: FleetNode}) and
    ``radio`` (None without LoRaWAN), and give the radio its ``RadioOrder``."""
    lora = {dev_eui(n).upper(): node for n, node in nodes.items() if node.spec.link == "lorawan"}
    if radio is not None and lora:
        radio.order = RadioOrder(next(iter(lora.values())).timeline, lora)
    sensed = set()  # (node, address, quantity) already sensing through its faults
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
            if mode == "spike":
                spec["probability"] = SPIKE_PROBABILITY
            if f.params.get("quantity") and mode != "nack":
                spec["quantity"] = f.params["quantity"]
            for n in f.targets:
                address = _sensor_address(nodes[n], f.params.get("quantity"))
                nodes[n].server.rig.fault(address, spec)
                if spec.get("quantity") in _SENSED_INPUTS and (n, address, spec["quantity"]) not in sensed:
                    sensed.add((n, address, spec["quantity"]))
                    _sense_through_faults(nodes[n].server.rig.bus.devices[address], spec["quantity"])
        elif f.kind == "lora_interference" and radio is not None:
            hz = f.params.get("channel_hz")
            freqs = [hz] if hz else list(CHANNELS_HZ)
            for hz in freqs:
                radio.jam(hz, f.start_s, end, gateways=list(f.targets))


def jump_rtc(node, jump_s):
    """A clock jump on ``node``'s RTC (a ``FleetNode``). Its sensors keep measuring its
    environment at the true time: the simulated parts read the truth at their clock's wall
    time, which the RTC's step moves too, so their truth is read ``jump_s`` earlier."""
    p = node.participant
    if p is not None and p.parked:  # held in a request (RadioOrder), its server's lock taken
        _jump_rtc(node, jump_s)
        return
    with node.server.lock:
        _jump_rtc(node, jump_s)


def _jump_rtc(node, jump_s):
    node.server.rig.wall(jump_s)
    for dev in node.server.rig.bus.devices.values():
        source = dev._truth
        dev.set_truth(lambda wall_s, source=source: source(wall_s - jump_s))


class RadioOrder:
    """``Radio.order`` for a fleet: a frame starting at ``start_us`` is decided once no other
    LoRaWAN node can still start one before it (each one's earliest time to act,
    ``Participant.progress_us``, is past it, or it waits here with a later frame: equal
    starts go in ``Radio.order_key`` order) and the director has acted on everything due by
    then. The sending node is held (``parked``) meanwhile, in real time only: its clock does
    not move. It looks again at each change of the timeline (``Timeline.wait_changed``).
    ``nodes``: radio name (upper-case DevEUI) -> ``FleetNode``."""

    # The most real seconds between looks: a look comes whenever the timeline changes (a
    # participant waits, is released or leaves) or another frame's turn ends; this bounds the
    # wait for what moves without the timeline (a running node's wire time).
    POLL_S = 0.002

    def __init__(self, timeline, nodes):
        self.timeline, self.nodes = timeline, nodes
        self._lock = threading.Lock()
        self._pending = {}  # radio name -> (start_us, key) of the frame it waits to send
        self.waits = 0      # frames that had to wait their turn

    def __call__(self, name, start_us, key):
        node = self.nodes.get(name)
        if node is None:
            return
        mine, p = (start_us, key), node.participant
        with self._lock:
            self._pending[name] = mine
        if p is not None:
            p.parked = True
            self.timeline.poke()  # a barrier need not wait for it
        try:
            generation = self.timeline.generation  # read before each look: no change is missed
            if not self._turn(name, mine):
                self.waits += 1
                while True:
                    generation = self.timeline.wait_changed(generation, self.POLL_S)
                    if self._turn(name, mine):
                        break
        finally:
            with self._lock:
                del self._pending[name]
            if p is not None:
                p.parked = False
            self.timeline.notify_changed()  # the frames behind this one look again

    def _turn(self, name, mine):
        start = mine[0]
        with self._lock:
            pending = dict(self._pending)
        for other, node in self.nodes.items():
            theirs = pending.get(other)
            if other == name or (theirs is not None and theirs > mine):
                continue
            if theirs is not None:
                return False
            p = node.participant
            if p is None:  # not powered on yet: it starts at its boot time
                if node.clock.now_us <= start:
                    return False
            elif not p.gone and p.progress_us() <= start:
                return False
        return all(p.progress_us() > start for p in self.timeline.participants() if p.exact and not p.gone)


def radio_record(radio, links, start_wall_s):
    """The run record's ``radio`` (None without one): the radio's counters, each modem link's
    (``links``: device id -> ``NodeLink``), and every frame put on air as ``[device,
    start_wall_s, end_wall_s, freq_hz, heard_by, {gateway: loss reason}]``."""
    if radio is None:
        return None
    device = {dev_eui(d).upper(): d for d in links}
    frames = [[device.get(tx.node, tx.node), round(start_wall_s + tx.start_us / 1e6, 3),
               round(start_wall_s + tx.end_us / 1e6, 3), tx.freq_hz, [r.gateway_id for r in tx.receptions],
               dict(tx.losses)] for tx in radio.log or []]
    return {"counters": dict(radio.counters), "links": {d: dict(link.counters) for d, link in links.items()},
            "frames": frames}


def log_only(run):
    """The action of a fault that is only logged (what the modelled faults do by themselves):
    nothing; the runner does not settle around it (``settles``)."""
    return None


def settles(act):
    """Whether the runner lets the gateways settle (``drain.settle``) around the action
    ``act``: the gateways' and the council's link's faults (broker outage, gateway power cut,
    disk full, a gateway's clock jump), where what was sent before the fault must reach the
    platform before it and a backlog its end releases must reach it at that instant
    (docs/simulation-fleet.md, "Latency"). Not the modelled faults (``log_only``) nor a
    node's own (its power cut, its clock jump, ``_on_a_node``): no backlog upstream is held
    or released by them, so a settle would only hold the fleet."""
    return act is not log_only and getattr(act, "settles", True)


def _on_a_node(act):
    """``act`` acts on nodes only (``settles``)."""
    act.settles = False
    return act


MODELLED = {"stuck_i2c": "stuck I2C bus", "failing_sensor": "failing sensor (%(mode)s)",
            "lora_interference": "radio interference (%(where)s)"}


def actions(faults):
    """``[(at_s, order, description, callable(run))]`` for the director, in time order. The
    modelled faults (``attach``) get entries too, which only log their start and end."""
    out = []
    for i, f in enumerate(faults):
        k, targets = f.kind, list(f.targets)
        who = ", ".join(targets)
        if k == "broker_outage":
            out.append((f.start_s, i, "council broker unreachable from %s" % who,
                        lambda run, t=targets: [run.brokers.outage(g, True) for g in t]))
            out.append((f.end_s, i, "council broker back for %s" % who,
                        lambda run, t=targets: [run.brokers.outage(g, False) for g in t]))
        elif k == "gateway_power_cut":
            out.append((f.start_s, i, "power cut: %s" % who,
                        lambda run, t=targets: [run.gateways[g].kill() for g in t]))
            out.append((f.end_s, i, "power back: %s" % who,
                        lambda run, t=targets: [run.gateways[g].start() for g in t]))
        elif k == "gateway_disk_full":
            out.append((f.start_s, i, "disk full: %s" % who,
                        lambda run, t=targets: [run.gateways[g].disk_full(True) for g in t]))
            out.append((f.end_s, i, "disk space back: %s" % who,
                        lambda run, t=targets: [run.gateways[g].disk_full(False) for g in t]))
        elif k == "node_power_cut":
            at_write = f.params.get("during", "any") == "flash_write"
            out.append((f.start_s, i, "power cut%s: %s" % (" at its next flash write" if at_write else "", who),
                        _on_a_node(lambda run, t=targets, w=at_write: [run.cut_node(n, at_write=w) for n in t])))
            out.append((f.end_s, i, "power back: %s" % who,
                        _on_a_node(lambda run, t=targets: [run.restore_node(n) for n in t])))
        elif k == "clock_jump":
            jump = float(f.params["jump_s"] if "jump_s" in f.params else f.params["jump"])
            on_gateway = f.target_kind == "gateway"
            act = lambda run, t=targets, j=jump, g=on_gateway: [run.jump_clock(x, j, g) for x in t]
            out.append((f.start_s, i, "clock jump %+d s: %s" % (jump, who), act if on_gateway else _on_a_node(act)))
        elif k in MODELLED:
            what = MODELLED[k] % {"mode": f.params.get("mode"),
                                  "where": "%g MHz" % f.params["channel_mhz"] if f.params.get("channel_mhz")
                                  else "every channel"}
            out.append((f.start_s, i, "%s: %s" % (what, who), log_only))
            out.append((f.end_s, i, "%s over: %s" % (what, who), log_only))
    out.sort(key=lambda a: (a[0], a[1]))
    return out
