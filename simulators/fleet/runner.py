"""``civicedge sim run SCENARIO.toml``: a simulated site end to end, on one virtual clock.

What runs (all real, on loopback): the nodes' firmware, each in its own ``micropython``
process against its own simulated sensors (``simulators/fleet/nodes.py``); each gateway's
agent in its own process (``gateway_child.py``); the site's and the council's brokers (Mosquitto, or amqtt) and
the council's platform subscriber (``site.py``); for LoRaWAN the modem emulators, the radio
and the network-server stand-in. The ``Timeline`` keeps every node's clock together and
publishes the global time to the gateways; the runner's *director* is a participant too, so
faults happen at their exact virtual time. The gateways' backlogs (for the report) are
sampled off the timeline, by a thread of their own, as the fleet's time passes each sample
time: the gateways are not on the timeline, so their backlog at a virtual instant is no more
exact than that, and the nodes need not be held at every sample. The director waits for the
scenario's end itself (a run whose length is not a whole number of sample periods used to
stop at its last sample).

A run: prepare (builds, brokers, configurations, nodes), start (gateways, nodes), direct
(faults; backlog samples and progress beside it) until the scenario's end (before and after each action
of a gateway's or the council link's fault the gateways forward what they hold with the time held:
``drain.settle``, ``inject.settles``), then drain
(the gateways forward what they hold, in real time), stop everything, read what is still held (each
node's flash, each gateway's outbox) and write the run record (``run_record.run_record``; docs/simulation-fleet.md) that
``accounting`` and ``report`` turn into the verdict.
"""

import json
import os
import pathlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from simulators import flashinspect
from simulators.ads1115 import SimADS1115
from simulators.fleet import drain, inject
from simulators.fleet.gateway_child import ClockFile
from simulators.fleet.gateways import GatewayProcess
from simulators.fleet.nodes import SSID_SET, Build, FleetNode, SerialCable, dev_eui, profile_table
from simulators.fleet.run_record import proc_cpu_s, run_record
from simulators.fleet.sched import batch_scheduling, policy_name, restore_scheduling
from simulators.fleet.site import SiteBrokers, Platform, gateway_files
from simulators.fleet.timeline import Timeline
from simulators.i2c_hub import BoardHub
from simulators.fleet import scenario as scenario_mod

ELECTRODE = {"electrode": {"zero_algorithm": 1}, "we": 0, "ae": 1}
WINDOW_S = 30  # the timeline's lookahead (timeline.py): nodes waking this close run together


class GlobalClock:
    """The fleet's time as a ``VirtualClock``-like view (for the network server)."""

    def __init__(self, timeline, start_wall_s):
        self.timeline, self.start_wall_s = timeline, start_wall_s

    @property
    def now_us(self):
        return self.timeline.now_us

    def monotonic_s(self):
        return self.timeline.now_us / 1e6

    def wall_s(self):
        return self.start_wall_s + self.timeline.now_us / 1e6


class FleetRun:
    """One run of ``scenario`` in ``workdir`` (made empty). ``say``: progress lines."""

    def __init__(self, scenario, workdir, say=print):
        self.sc = scenario
        self.dir = pathlib.Path(workdir).resolve()  # children run in their own directories
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.say = say
        self.nodes, self.gateways, self.clockfiles = {}, {}, {}
        self.brokers = self.platform = self.cable = self.radio = None
        self.network_servers = []
        self.radio_links = {}  # device id -> its modem's NodeLink (LoRaWAN nodes)
        self.timeline = Timeline(end_us=scenario.duration_s * 1_000_000, publish=self._publish,
                                 window_us=WINDOW_S * 1_000_000)
        self.view = GlobalClock(self.timeline, scenario.start_wall_s)
        self.hub = None  # serves every node's sensor server (simulators/i2c_hub.py), from prepare()
        self.backlog = {g.id: [] for g in scenario.gateways}
        self.log = []  # (wall_s, what) of every director action
        self.settle_wall_s = 0.0  # real s the director held the time for the gateways (drain.settle)
        self._sample_at_us = 0            # the next backlog sample's virtual time (_publish, _sampler)
        self._sample_due = threading.Event()
        self._sampling = True
        self._policy = None  # what to restore of the calling thread's scheduling (sched.batch_scheduling)

    def _publish(self, g_us):
        """Every new G (the timeline's lock held: quick): to the gateways, and the sampler."""
        for cf in self.clockfiles.values():
            cf.publish(g_us)
        if g_us >= self._sample_at_us:
            self._sample_due.set()

    def now_wall(self):
        return self.view.wall_s()

    def node_wall(self, device):
        """Node ``device``'s own virtual time as wall time (no RTC clock jump), None if unknown:
        the platform stamps arrivals no earlier than it (site.Platform)."""
        node = self.nodes.get(device)
        return None if node is None else self.sc.start_wall_s + node.clock.now_us / 1e6

    # -- preparation ----------------------------------------------------------------------------
    def prepare(self):
        """Build and start what the run needs before its time starts (module docstring); from
        here to the end of ``run`` the calling thread, and so everything it starts, is under
        ``sched.batch_scheduling``."""
        if self._policy is None:
            self._policy = batch_scheduling()
        sc, specs = self.sc, self.sc.nodes()
        self.say("preparing %d nodes, %d gateways" % (len(specs), len(sc.gateways)))
        self.brokers = SiteBrokers(str(self.dir / "brokers"), [n.id for n in specs if n.link == "mqtt"],
                                   sc.gateways).start()
        self.say("brokers: %s" % self.brokers.describe())
        self.cable = SerialCable()
        self.hub = BoardHub().start()
        builds, keys, serial_ports, by_gw = {}, {}, {}, {g.id: [] for g in sc.gateways}
        lora_gws = [g.id for g in sc.gateways if g.lorawan]
        if any(n.link == "lorawan" for n in specs):
            self._lorawan(specs, lora_gws)
        ca = pathlib.Path(self.brokers.tls["cafile"]).read_bytes()
        for spec in specs:
            kind = (spec.profile, spec.link, tuple(spec.sets))
            electrode, calibration = self._electrode(spec)
            if kind not in builds:
                self.say("building firmware: %s over %s" % (spec.profile, spec.link))
                builds[kind] = Build(self.dir / "builds" / ("b%d" % len(builds)), spec.profile, spec.link,
                                     spec.sets, self._link_sets(spec.link), calibration=calibration)
            key = os.urandom(32)
            secrets = {"device_key_hex": key.hex()}
            link_env, extra, eui = {}, {}, None
            if spec.link == "serial":
                node_end, gw_end = self.cable.add(spec.id)
                link_env["CIVICEDGE_UART2"] = node_end
                serial_ports[spec.id] = gw_end
            elif spec.link == "mqtt":
                secrets.update(wifi_password=self.brokers.wifi_pw, mqtt_password=self.brokers.node_pw[spec.id])
                extra["ca.pem"] = ca
            else:
                eui = dev_eui(spec.id)
                secrets["lorawan_app_key_hex"] = self.app_keys[spec.id]
            if spec.link != "lorawan":
                keys[spec.id] = key
            node = FleetNode(spec, scenario_mod.make_environment(spec), builds[kind], self.dir / "nodes",
                             self.timeline, sc.start_wall_s, sc.duration_s, link_env,
                             {"extra_files": extra, "secrets": secrets, "calibration": calibration,
                              "sets": self._node_sets(spec, eui)}, electrode=electrode, hub=self.hub)
            if spec.link == "lorawan":
                link_env["CIVICEDGE_UART2"] = self._modem(node, eui)
            node.link_env = link_env
            self.nodes[spec.id] = node
            by_gw[spec.gateway].append((spec, eui))
        for g in sc.gateways:
            d = self.dir / "gateways" / g.id
            d.mkdir(parents=True)
            cfg = gateway_files(str(d), g, by_gw[g.id], {s.id: keys[s.id] for s, _ in by_gw[g.id] if s.id in keys},
                                self.brokers, {s.id: serial_ports[s.id] for s, _ in by_gw[g.id] if s.id in serial_ports},
                                self.app_ids.get(g.id, "+") if self.radio else "+")
            self.clockfiles[g.id] = ClockFile(str(d / "clock"))
            self.gateways[g.id] = GatewayProcess(g, cfg, str(d / "clock"), sc.start_wall_s, str(d))
            self.gateways[g.id].on_power = self._far_end_setter([s.id for s, _ in by_gw[g.id] if s.link != "lorawan"])
        inject.attach(sc.faults, self.nodes, self.radio)
        return self

    def _far_end_setter(self, node_ids):
        """What a gateway's power calls: its serial and MQTT nodes' far end is up or down (a
        node waits in real time for a far end that is up, with no virtual time passing:
        ``SimServer.far_end``, ``simlink.patient``)."""
        def set_far_end(up):
            for i in node_ids:
                self.nodes[i].server.far_end = bool(up)
        return set_far_end

    def _link_sets(self, link):
        if link == "mqtt":
            return [SSID_SET, "link.mqtt.host=127.0.0.1", "link.mqtt.port=%d" % self.brokers.site.port]
        return []

    @staticmethod
    def _node_sets(spec, eui):
        if eui is None:
            return []
        return ["link.lorawan.dev_eui=" + eui, "link.lorawan.join_eui=70b3d57ed0000000"]

    def _electrode(self, spec):
        sensors = profile_table(spec.profile)["sensors"]
        idx = next((i for i, s in enumerate(sensors) if s["part"] == "ads1115"), None)
        if idx is None:
            return None, None
        sheet = SimADS1115(sensors[idx]["address"], inputs=ELECTRODE,
                           seed=(spec.env_seed & 0xFFFFFF) + idx).electrode_sheet
        path = self.dir / "calibration" / ("%s.json" % spec.id)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(sheet))
        return ELECTRODE, path

    def _lorawan(self, specs, lora_gws):
        from simulators.lorawan_ns import NetworkServer
        from simulators.lorawan_radio import Radio

        sites = {dev_eui(n.id).upper(): dict(n.distances_m) for n in specs if n.link == "lorawan"}
        self.radio = Radio(seed=self.sc.seed, sites=sites)
        self.app_keys = {n.id: os.urandom(16).hex() for n in specs if n.link == "lorawan"}
        self.app_ids, self.ns_by_gw = {}, {}
        for i, gid in enumerate(sorted({n.gateway for n in specs if n.link == "lorawan"})):
            app = "0f0e0d0c-0000-4000-8000-%012d" % (i + 1)
            devices = {dev_eui(n.id): n.id for n in specs if n.link == "lorawan" and n.gateway == gid}
            ns = NetworkServer("127.0.0.1", self.brokers.plain_port, "chirpstack", self.brokers.ns_pw, app, devices,
                               clock=self.view, seed=self.sc.seed + i, keep_events=False,
                               client_id="chirpstack-sim-%d" % i)
            self.app_ids[gid], self.ns_by_gw[gid] = app, ns
            self.network_servers.append(ns)

    def _modem(self, node, eui):
        from simulators.atmodem import ATModemEmulator

        cfg = node.config
        emu = ATModemEmulator(cfg["link"]["modem"]["dialect"], clock=node.clock, clock_lock=node.server.lock, time_mode="follow",
                              expected_app_key=self.app_keys[node.spec.id], seed=node.spec.env_seed & 0xFFFF)
        self.radio_links[node.spec.id] = self.radio.link(self.ns_by_gw[node.spec.gateway]).attach(emu)
        emu.start()
        node.server.uart_peers[2] = emu  # H1 (speed): UART2 settles the modem, no real waits (simuart.py)
        node.modem = emu
        return emu.port_path

    # -- the run --------------------------------------------------------------------------------
    def run(self):
        """Start everything, direct the scenario to its end, drain, stop; the run record."""
        try:
            return self._run()
        finally:
            restore_scheduling(self._policy)
            self._policy = None

    def _run(self):
        t0, cpu0 = time.monotonic(), time.process_time()
        director = self.timeline.join("director", _DirectorClock(), exact=True)
        sampler = threading.Thread(target=self._sampler, args=(t0,), name="fleet-sampler", daemon=True)
        sampler.start()
        try:
            self.cable.start()
            for ns in self.network_servers:
                ns.start()
            self.platform = Platform(self.brokers, self.now_wall, self.node_wall)
            for g in self.gateways.values():
                g.spawn()
            for g in self.gateways.values():
                g.ready()
            self.say("gateways running; starting %d nodes" % len(self.nodes))
            for n in self.nodes.values():
                n.start()
            self._direct(director)
        finally:
            director.leave()
            self._sampling = False
            self._sample_due.set()
            sampler.join()
        self._samples_due(t0, self.sc.duration_s * 1_000_000)  # those the end reached (G stops there)
        self.say("simulated %s in %.0f s; draining the gateways" % (_span(self.sc.duration_s), time.monotonic() - t0))
        self._drain()
        return self._finish(time.monotonic() - t0, time.process_time() - cpu0)

    def _direct(self, director):
        for at_s, _, what, act in sorted(inject.actions(self.sc.faults), key=lambda a: a[0]):
            # a fault acts at one virtual instant, every node held (timeline.py "Barriers")
            director.wait_until(int(at_s * 1_000_000), barrier=True)
            self.log.append((self.now_wall(), what))
            self.say("  %s  %s" % (_hhmm(self.now_wall()), what))
            settle = inject.settles(act)
            if settle:
                self._settle()
            act(self)
            if settle:
                self._settle()
        director.wait_until(self.sc.duration_s * 1_000_000)  # the end: G stops there

    def _sampler(self, t0):
        """The backlog samples and progress lines, as G passes each sample time (module
        docstring), until the run's end."""
        while True:
            self._sample_due.wait()
            self._sample_due.clear()
            if not self._sampling:
                return
            self._samples_due(t0, self.timeline.now_us)
            if self.timeline.now_us >= self._sample_at_us:  # G moved on meanwhile
                self._sample_due.set()

    def _samples_due(self, t0, g_us):
        """Take every sample whose time G (``g_us``) has reached."""
        sc = self.sc
        while self._sample_at_us <= min(g_us, sc.duration_s * 1_000_000):
            at_s = self._sample_at_us // 1_000_000
            self._sample()
            if at_s % max(3600, sc.duration_s // 12) < sc.sample_s:
                self._progress(at_s, t0)
            self._sample_at_us += sc.sample_s * 1_000_000

    def _sample(self):
        """The gateways' backlogs now (rows in the outbox); none from a gateway that is off."""
        for gid, g in self.gateways.items():
            got = g.command("backlog")
            if got is not None:
                self.backlog[gid].append([self.now_wall(), got["rows"]])

    def _progress(self, at_s, t0):
        alive, sent = sum(1 for n in self.nodes.values() if n.running()), self.platform.count()
        self.say("  %s  +%s  %d nodes running, %d message%s upstream, %.0f s wall" % (
            _hhmm(self.now_wall()), _span(at_s), alive, sent, "" if sent == 1 else "s", time.monotonic() - t0))

    # -- fault actions (inject.actions) -------------------------------------------------------
    def cut_node(self, node_id, at_write=False):
        """A node's power cut: now, or (``at_write``) at its next flash write."""
        node = self.nodes[node_id]
        if at_write:
            node.power_cut_at_write()
        else:
            node.power_cut()

    def restore_node(self, node_id):
        """The power back: a cut not yet made is cancelled; a node that is off starts."""
        node = self.nodes[node_id]
        node.disarm_cut()
        if not node.running():
            node.start()

    def jump_clock(self, target, jump_s, gateway):
        """A clock-jump fault: a gateway's wall clock, or a node's RTC, stepped by ``jump_s``."""
        if gateway:
            self.clockfiles[target].jump(jump_s)
        else:
            inject.jump_rtc(self.nodes[target], jump_s)

    # -- the end --------------------------------------------------------------------------------
    def _settle(self):
        """The gateways that can reach the council's broker forward what they hold, the
        fleet's time held (``drain.settle``)."""
        proxies, t0 = getattr(self.brokers, "proxies", {}), time.monotonic()
        drain.settle([g for gid, g in self.gateways.items() if gid not in proxies or proxies[gid].passing],
                     self.platform.count, in_flight=self._uplinks_in_flight)
        self.settle_wall_s += time.monotonic() - t0

    def _drain(self):
        drain.drain(list(self.gateways.values()), self.platform.count, in_flight=self._uplinks_in_flight)

    def _uplinks_in_flight(self):
        """The network servers' events not yet at the site's broker."""
        return sum(ns.unpublished() for ns in self.network_servers)

    def _finish(self, wall_s, cpu_s):
        self.timeline.cancel_all()
        for n in self.nodes.values():
            n.stop()
            if getattr(n, "modem", None) is not None:
                n.modem.stop()  # its thread and pty (its node is gone; its counters stay)
        self.hub.stop()
        for g in self.gateways.values():
            g.stop()
        with ThreadPoolExecutor(2) as pool:
            held = dict(zip(self.nodes, pool.map(
                lambda n: flashinspect.inspect_image(n.image, n.config), self.nodes.values())))
        broker_cpu = sum(proc_cpu_s(b.proc) for b in (self.brokers.site, self.brokers.council))
        for ns in self.network_servers:
            ns.stop()
        self.platform.close()
        self.cable.close()
        self.brokers.close()
        return run_record(self, held, wall_s, cpu_s, broker_cpu, policy_name())


class _DirectorClock:
    """The director's clock: wherever the timeline last released it."""

    def __init__(self):
        self.now_us = 0

    def advance_us(self, us):
        self.now_us += us


def _hhmm(wall_s):
    return time.strftime("%a %H:%M", time.gmtime(wall_s))


def _span(seconds):
    h, m = divmod(int(seconds) // 60, 60)
    return "%dh%02dm" % (h, m)
