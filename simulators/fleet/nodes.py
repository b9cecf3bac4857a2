"""The fleet's nodes: the real firmware, built once per kind of node, each node on its own
``SimServer`` (its sensors, measuring its environment model) and its own ``micropython``
process, its clock on the fleet's ``Timeline``.

A node's link is real bytes all the way: serial through a pty pair (``SerialCable``: the
runner copies bytes between the node's pty and the gateway's, and can cut the cable), MQTT
over TLS to the site's Mosquitto, LoRaWAN as AT commands to an ``ATModemEmulator`` whose
uplinks cross the ``Radio`` to the ``NetworkServer``.

The node process: ``simulators/mpy/board.py --flash IMAGE --until-s END --rtc-synced``
(the RTC was set when the node was commissioned; ``--rail`` too for a node whose sensors sit
on the board's switched rail, ``node_board.rail_args``), started at its boot offset; it runs until
the scenario's end. A power cut is SIGKILL; the power coming back is a new process on the
same flash image (``start(power_on=True)`` again, the install skipped).
"""

import functools
import hashlib
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import threading
import time
import tty

from civicedge import firmware_build as fb
from simulators.clock import VirtualClock
from simulators.i2c_server import SimServer
from simulators.mpyrun import REPO, micropython_env
from simulators.fleet.node_board import (CODE_ROM, CODE_ROM_K, FLASH_CACHE, FLASH_READ, GC_SCALE, HEAP,  # noqa: F401
                                         LATE_COLLECT, ROM_AREA_K, interpreter, rail_args)
from simulators.rig import LocalRig

BOARD_PY = REPO / "simulators" / "mpy" / "board.py"
JOIN_EUI = "70b3d57ed0000000"
BOARDS = {"serial": "esp32-devkitc", "mqtt": "esp32-devkitc", "lorawan": "esp32-devkitc-rak3272s"}
BATTERY_PIN_V = 1.5  # 3.0 V of 2xAA Li-FeS2 through the board's 1:2 divider
SSID_SET = "link.wifi.ssid=civicedge-sim"  # the simulator's access point answers any SSID
REAL_WAIT_MS = "200"  # how long a node waits in real time for its gateway before virtual time passes


# The watcher of power_cut_at_write: argv PID IMAGE. Prints "armed" once inotify watches the
# image, then SIGKILLs PID at the first write to it (exit 0); exit 1 if PID is gone.
_CUT_AT_WRITE = r"""
import ctypes, os, signal, sys
pid, path = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, path.encode(), 0x2) < 0:  # IN_MODIFY
    sys.exit(2)
print("armed", flush=True)
os.read(fd, 4096)
try:
    os.kill(pid, signal.SIGKILL)
except ProcessLookupError:
    sys.exit(1)
"""


def dev_eui(device_id):
    """A stable DevEUI for a simulated node (16 hex digits, in an IEEE OUI-36 style block)."""
    return "70b3d57ed0" + hashlib.sha256(device_id.encode()).hexdigest()[:6]


def node_attributes(spec):
    """The device attributes the gateway's alarm rules select on (``applies_to``): a pipe
    outlet's ``outlet`` ("hot" or "cold"), as provisioning records it."""
    if spec.environment == "pipe":
        return {"outlet": spec.params.get("kind", "hot")}
    return {}


@functools.lru_cache(maxsize=None)
def profile_table(name):
    """The profile ``name`` as the build reads it (cached: read-only here)."""
    return fb.load_profile(name)


class Build:
    """One real ``firmware_build.build`` per kind of node (profile, link, sets); every node's
    flash tree is its files plus the node's own ``config.json`` and ``manifest.json``."""

    def __init__(self, workdir, profile, link, sets, extra_sets=(), calibration=None):
        self.profile, self.link = profile, link
        self.board = BOARDS[link]
        self.sets = list(sets) + list(extra_sets)
        self.calibration = calibration
        self.dir = pathlib.Path(workdir) / "template"
        self.manifest = fb.build(self.board, profile, "template-node", self.dir, link=link,
                                 sets=["link.type=%s" % link] + self.sets, calibration=calibration)
        self.sources = {e["path"]: e["source"] for e in self.manifest["files"]}

    def write(self, device_id, out, sets=(), extra_files=None, secrets=None, calibration=None):
        """Node ``device_id``'s flash tree in ``out`` (its config with ``sets`` on top, its own
        sensor ``calibration`` file if given); returns its config (a dict)."""
        cfg = fb.node_config(fb.load_board(self.board), fb.load_profile(self.profile), device_id, self.link)
        calibration = calibration or self.calibration
        if calibration:
            fb.apply_calibration(cfg, fb.read_data(calibration), str(calibration))
        for assignment in ["link.type=%s" % self.link] + self.sets + list(sets):
            fb.apply_set(cfg, assignment)
        cfg["firmware_version"] = self.manifest["firmware_version"]
        text = fb.config_json(fb.check_config(cfg, "config.json of %s" % device_id, fb.REPO)).encode()
        info = {"device_id": device_id, "board": self.board, "profile": self.profile, "link": self.link,
                "compiler": self.manifest["compiler"], "march": self.manifest["march"]}
        out = pathlib.Path(out)
        fb.write_bundle(self.dir, self.sources, text, info, out)
        for name, data in (extra_files or {}).items():
            (out / name).write_bytes(data)
        (out / "secrets.json").write_text(json.dumps(secrets or {}))
        return json.loads(text)


class SerialCable:
    """Pty pairs joined by one thread: node end <-> gateway end, for every serial node. A cut
    cable loses what is sent meanwhile (counted)."""

    def __init__(self):
        self._pairs = {}   # master fd -> (peer master fd, name)
        self._keep = []
        self.cut = set()
        self.lost_bytes = 0
        self._stop = threading.Event()
        self._wake_r = self._wake_w = None  # close() wakes the thread (it blocks until bytes come)
        self._thread = None

    def add(self, name):
        """A new cable: returns ``(node_path, gateway_path)``."""
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            ends.append((master, os.ttyname(slave)))
            self._keep.append(slave)  # the pty survives its user closing it
        (ma, pa), (mb, pb) = ends
        self._pairs[ma] = (mb, name)
        self._pairs[mb] = (ma, name)
        return pa, pb

    def start(self):
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="fleet-serial", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        fds = list(self._pairs) + [self._wake_r]
        while not self._stop.is_set():
            ready, _, _ = select.select(fds, [], [])  # no timeout: bytes, or close()
            for fd in ready:
                if fd == self._wake_r:
                    continue
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                peer, name = self._pairs[fd]
                if name in self.cut:
                    self.lost_bytes += len(data)
                    continue
                try:
                    os.write(peer, data)
                except OSError:
                    self.lost_bytes += len(data)

    def close(self):
        self._stop.set()
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5)
        for fd in list(self._pairs) + self._keep + [fd for fd in (self._wake_r, self._wake_w) if fd is not None]:
            try:
                os.close(fd)
            except OSError:
                pass


def rig_devices(profile, truth, seed, electrode=None):
    """The simulated parts a node of ``profile`` carries (its ``[[sensors]]``), every one
    measuring ``truth`` (an environment model's ``at``)."""
    out = []
    for i, s in enumerate(profile_table(profile)["sensors"]):
        spec = {"model": s["part"], "address": s["address"], "truth": truth, "seed": seed + i}
        if s["part"] == "ads1115":
            spec["inputs"] = electrode
        out.append(spec)
    return out


class FleetNode:
    """One node (see the module docstring). ``spec``: a ``NodeSpec``; ``env``: its model."""

    def __init__(self, spec, env, build, workdir, timeline, start_wall_s, end_s, link_env, files,
                 electrode=None, hub=None):
        self.spec, self.env, self.build = spec, env, build
        self.dir = pathlib.Path(workdir) / spec.id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.image = self.dir / "flash.img"
        self.timeline = timeline
        self.end_s = end_s
        self.link_env = dict(link_env)     # CIVICEDGE_UART2 etc.
        files = dict(files)
        self.config = build.write(spec.id, self.dir / "bundle", sets=list(spec.sets) + files.pop("sets", []), **files)
        clock = VirtualClock(start_wall_s=start_wall_s)
        clock.advance_s(spec.boot_offset_s)
        self.server = SimServer(LocalRig(clock), hub=hub).start()  # hub: the fleet's BoardHub, or None
        seed = spec.env_seed & 0xFFFFFF
        self.server.rig.setup(rig_devices(spec.profile, env.at, seed, electrode))
        if self.config.get("battery"):
            self.server.analog[str(self.config["battery"]["adc_pin"])] = BATTERY_PIN_V
        self.proc = None
        self.participant = None
        self.runs = []        # board.py summaries, one per power-on
        self.power_cuts = 0
        self.cpu_s = 0.0      # the node processes' CPU time (user + system), s
        self._lock = threading.RLock()
        self._cutter = None   # the watcher of a power cut armed for the next flash write
        self.cuts_at_write = 0  # power cuts that hit a flash write (power_cut_at_write)

    @property
    def clock(self):
        return self.server.rig.clock

    def start(self):
        """Power on: a participant at the node's clock (moved on to the fleet's time if the
        node was off), then the process."""
        behind = self.timeline.now_us - self.clock.now_us
        if behind > 0:
            self.clock.advance_us(behind)
        self.participant = self.timeline.join(self.spec.id, self.clock)
        self.server.gate = self._gate
        self.server.gate_async = self._gate_async
        args = [str(BOARD_PY), "--flash", str(self.image), "--until-s", str(int(self.end_s)),
                "--rtc-synced", "--wakes", "1000000", "--gc-scale", str(GC_SCALE), "--flash-read", str(FLASH_READ),
                "--flash-cache", str(FLASH_CACHE)]
        heap_k = int(HEAP[self.spec.link][:-1])
        if CODE_ROM:
            args += ["--code-rom"] + (["--late-collect"] if LATE_COLLECT else [])
            heap_k += 0 if interpreter()[0] == sys.executable else CODE_ROM_K
        args += rail_args(self.config)
        if not self.image.exists():
            args += ["--install", str(self.dir / "bundle")]
        env = dict(self.link_env, CIVICEDGE_REAL_WAIT_MS=REAL_WAIT_MS)
        self._out = open(self.dir / ("run%d.log" % len(self.runs)), "w")
        self.proc = subprocess.Popen(interpreter() + ["-X", "heapsize=%dK" % heap_k] + args,
                                     env=micropython_env(self.server, True, env), cwd=REPO,
                                     stdout=self._out, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._watch, args=(self.proc, self.participant), daemon=True).start()

    def _gate(self, target_us):
        self.participant.wait_until(target_us)

    def _gate_async(self, target_us, resume):
        return self.participant.wait_async(target_us, resume)

    def _watch(self, proc, participant):
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time, as it is reaped
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s += usage.ru_utime + usage.ru_stime
        participant.leave()  # ended (its last cycle before the end) or killed

    def power_cut(self):
        """SIGKILL wherever it is (a flash write included); it stays off until ``start``."""
        with self._lock:
            self.disarm_cut()
            if self.running():
                self.proc.send_signal(signal.SIGKILL)
                self._wait_reaped()
                self.power_cuts += 1
            self._finish_run()

    def power_cut_at_write(self):
        """Arm a power cut for the node's next write to its flash image: a watcher process
        (``_CUT_AT_WRITE``: inotify on the image) SIGKILLs the node as the write reaches the
        file, so the cut lands in the flash update that write began (littlefs's commit is
        several block writes; how many more reach the file first is not controlled). Returns once the watch is in place; False if the node is off or a cut
        is armed already. It stays off after the cut until ``start``; ``disarm_cut`` (or
        ``power_cut``/``stop``) cancels a cut not yet made."""
        with self._lock:
            if not self.running() or self._cutter is not None:
                return False
            cutter = subprocess.Popen([sys.executable, "-c", _CUT_AT_WRITE, str(self.proc.pid), str(self.image)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            if cutter.stdout.readline().strip() != "armed":
                cutter.kill()
                cutter.wait()
                raise RuntimeError("%s: cannot watch %s for writes (inotify)" % (self.spec.id, self.image))
            self._cutter = cutter
        threading.Thread(target=self._await_cut, args=(cutter,), daemon=True).start()
        return True

    def _await_cut(self, cutter):
        cut = cutter.wait() == 0  # 0: it killed the node at a write
        with self._lock:
            if self._cutter is cutter:
                self._cutter = None
                if cut:
                    self._cut_made()

    def _cut_made(self):
        """The watcher's SIGKILL landed: the run is over (lock held)."""
        self._wait_reaped()
        self.power_cuts += 1
        self.cuts_at_write += 1
        self._finish_run()

    def disarm_cut(self):
        """Cancel an armed cut not yet made (a watcher that already cut is accounted for)."""
        with self._lock:
            cutter, self._cutter = self._cutter, None
            if cutter is None:
                return
            cutter.kill()
            code = cutter.wait()
            if code == 0 or (self.proc is not None and self._killed_now()):
                self._cut_made()  # it cut just before it was cancelled

    def _killed_now(self):
        """True if the node's process died of a SIGKILL (only a power cut sends one)."""
        self._wait_reaped(0.05)
        return self.proc.returncode == -signal.SIGKILL and not self._out.closed

    def running(self):
        return self.proc is not None and self.proc.returncode is None

    def _wait_reaped(self, timeout_s=10.0):
        end = time.monotonic() + timeout_s
        while self.proc.returncode is None and time.monotonic() < end:
            time.sleep(0.005)

    def _finish_run(self):
        if self.participant is not None:
            self.participant.leave()
        if self.proc is not None and not self._out.closed:
            self._out.close()
            text = (self.dir / ("run%d.log" % len(self.runs))).read_text(errors="replace")
            lines = [ln for ln in text.splitlines() if ln.startswith("BOARD ")]
            self.runs.append(json.loads(lines[-1][6:]) if lines else {"end": "killed", "rc": self.proc.returncode,
                                                                        "tail": text[-2000:]})

    def stop(self):
        """End of run: the process (asleep past the end, or already exited) stops."""
        with self._lock:
            self.disarm_cut()
            if self.running():
                self.proc.send_signal(signal.SIGKILL)  # asleep past the end: nothing to lose
                self._wait_reaped()
            self._finish_run()
        self.server.stop()

    def stats(self):
        boots, resets = 0, {}
        for r in self.runs:
            boots += r.get("boots", 0)
            for k, v in (r.get("resets") or {}).items():
                resets[k] = resets.get(k, 0) + v
        reads = sum(self.server.rig.counters(s["address"]).get("reads", 0)
                    for s in profile_table(self.spec.profile)["sensors"])
        sim = {}  # what the node cost the simulation (board.py's BOARD "sim"), over its runs
        for r in self.runs:
            for k, v in (r.get("sim") or {}).items():
                sim[k] = sim.get(k, 0) + v
        return {"boots": boots, "resets": resets, "end": self.runs[-1].get("end") if self.runs else None,
                "sensor_reads": reads, "power_cuts": self.power_cuts, "sim": sim, "cpu_s": round(self.cpu_s, 3),
                "errors": [r.get("tail", "") for r in self.runs if r.get("end") in ("error", "killed")
                           and r.get("tail")]}
