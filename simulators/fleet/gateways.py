"""A simulated gateway's process, as the runner drives it: start (power on), kill (power
cut), commands over its stdin (``simulators/fleet/gateway_child.py``), a full disk (which
outlasts a power cut), its CPU time.

The child answers each command with one line on its stdout, in order. A read waits for the
line with a deadline (``select`` on the pipe, no thread); an answer that comes after its
command gave up waiting is skipped by the next read, so every command gets its own answer.
"""

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time

from simulators.mpyrun import REPO


class GatewayProcess:
    def __init__(self, spec, config_path, clock_path, start_wall_s, workdir):
        self.spec, self.config_path, self.clock_path = spec, config_path, clock_path
        self.start_wall_s = start_wall_s
        self.dir = workdir
        self.proc = None
        self.cpu_s = 0.0
        self.starts = self.kills = 0
        self.full = False  # the disk is full (gateway_disk_full): every start finds it so
        self._lock = threading.Lock()
        self._buf = b""   # what the child has sent past the last line read
        self._late = 0    # answers still to come for commands that gave up waiting
        self.last_snapshot = {}
        self.on_power = None  # called with True after a start, False after a kill (the runner's)

    def start(self, timeout_s=60.0):
        """Power on; returns when the agent says it is running (or raises)."""
        return self.spawn().ready(timeout_s)

    def spawn(self):
        """Power on and return at once; ``ready`` waits for the agent (the runner starts
        every gateway, then waits for them all: their start-ups overlap)."""
        self._log_path = log_path = os.path.join(self.dir, "gateway-%d.log" % self.starts)
        log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.fleet.gateway_child", self.config_path, self.clock_path,
             repr(self.start_wall_s)], cwd=self.dir, env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0)
        log.close()
        self._buf, self._late = b"", 0
        self.starts += 1
        threading.Thread(target=self._reap, args=(self.proc,), daemon=True).start()
        return self

    def ready(self, timeout_s=60.0):
        """Wait for the agent ``spawn`` started to say it is running (or raise)."""
        log_path = self._log_path
        line = self._read(timeout_s)
        if not line or not json.loads(line).get("ready"):
            with open(log_path, errors="replace") as f:  # its last words (the run's directory may not stay)
                tail = f.read()[-1500:]
            raise RuntimeError("gateway %s did not start (%s): see %s\n%s" % (
                self.spec.id, "exit %s" % self.proc.poll() if self.proc.poll() is not None else "no answer",
                log_path, tail))
        if self.full:
            self.command("disk_full")
        if self.on_power is not None:
            self.on_power(True)
        return self

    def disk_full(self, full):
        """The disk fills (``full``: the outbox capped at its size, now and after any
        restart) or has room again; the agent's answer (None if it is off)."""
        self.full = full
        return self.command("disk_full" if full else "disk_ok")

    def _reap(self, proc):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s += usage.ru_utime + usage.ru_stime

    def _read(self, timeout_s):
        """The child's answer to the last command (text, without its newline), or None if it
        has not come within ``timeout_s`` (s) or the child has closed its stdout (exited)."""
        end = time.monotonic() + timeout_s
        while True:
            line = self._line(end)
            if line is None:
                self._late += 1  # its answer, if it comes, is the next read's to skip
                return None
            if not self._late:
                return line.decode("utf-8", "replace")
            self._late -= 1

    def _line(self, end):
        """The next whole line the child sends (bytes), waiting until ``end`` (monotonic s)."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None  # the end: the child exited
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _send(self, cmd):
        """Write the command line ``cmd``; False if the child's stdin is closed."""
        try:
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def alive(self):
        return self.proc is not None and self.proc.returncode is None

    def command(self, cmd, timeout_s=30.0):
        """One command (see gateway_child); its JSON answer, or None if it is off."""
        with self._lock:
            if not self.alive() or not self._send(cmd):
                return None
            line = self._read(timeout_s)
        return json.loads(line) if line else None

    def snapshot(self):
        snap = self.command("snapshot")
        if snap is not None:
            self.last_snapshot = snap
        return snap

    def kill(self):
        """A power cut: SIGKILL, wherever it is."""
        with self._lock:
            if self.alive():
                self.proc.send_signal(signal.SIGKILL)
                self._wait()
                self.kills += 1
                if self.on_power is not None:
                    self.on_power(False)

    def _wait(self, timeout_s=30.0):
        end = time.monotonic() + timeout_s
        while self.proc.returncode is None and time.monotonic() < end:
            time.sleep(0.01)

    def stop(self):
        """As SIGTERM does: store what is queued, close; then the outbox is ours to read."""
        if self.alive():
            self.snapshot()
            with self._lock:
                if self._send("stop"):
                    self._read(60)
                self._wait(60)
        if self.alive():
            self.kill()

    def held(self, node_ids):
        """``[[device, epoch, seq], ...]`` still in the outbox (the agent stopped)."""
        db = sqlite3.connect(os.path.join(self.dir, "data", "outbox.sqlite3"))
        try:
            rows = db.execute("SELECT device_id, boot_epoch, seq FROM rows ORDER BY id").fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            db.close()
        return [list(r) for r in rows if r[0] in node_ids]
