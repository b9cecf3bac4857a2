"""The drain bench's processes (``simulators.bench_gateway_drain``): reading a process's CPU
and memory from ``/proc``, ``Child`` (a measured process), the agent as the children compose
it, and the subscriber child that counts what arrives."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from simulators.bench_gateway_fill import BOUNDS

SITE, GATEWAY = "bench", "gw-bench"
WINDOW, PER_PUBLISH = 100, 100  # MQTTForwarder's defaults (gateway.config)
BROKER_CONFIG = ["max_inflight_messages %d" % WINDOW, "max_queued_messages 0"]


# ---- measuring a process from outside --------------------------------------------------------

def proc_cpu_s(pid):
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    with open("/proc/%s/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def proc_kb(pid, field="VmHWM"):
    """``field`` of ``/proc/<pid>/status`` in kB (``VmHWM``: peak resident set)."""
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%s/status" % (field, pid))


class Child:
    """A measured process: ``python -m simulators.bench_gateway_drain MODE ARGS`` (or any
    ``argv``); lines on its stdin/stdout; stderr to a file kept for error messages."""

    def __init__(self, mode, args=None, argv=None, tmp=None):
        from simulators.mpyrun import REPO

        self.err = tempfile.NamedTemporaryFile("w+", dir=tmp, suffix=".log", delete=False)
        argv = argv or [sys.executable, "-m", "simulators.bench_gateway_drain", mode,
                        json.dumps(args or {})]
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, cwd=str(REPO))
        self.pid = self.p.pid

    def line(self, timeout_s=600.0):
        """The child's next stdout line (JSON decoded when it is JSON)."""
        box = []
        t = threading.Thread(target=lambda: box.append(self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout_s)
        if not box or not box[0]:
            self.err.seek(0)
            raise RuntimeError("bench child %s said nothing (exit %s); its log:\n%s"
                               % (self.p.args[3:4], self.p.poll(), self.err.read()[-3000:]))
        text = box[0].strip()
        return json.loads(text) if text[:1] in "{[" else text

    def say(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.err.close()
        os.unlink(self.err.name)


# ---- the children ---------------------------------------------------------------------------

def _hwm():
    return proc_kb("self")


def _threads_cpu():
    """{thread name: CPU seconds} of this process's threads (``/proc/self/task``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + proc_cpu_s("self/task/%s" % tid)
    return out


def _upstream(host, port):
    from gateway.config_types import MQTTConnection, MQTTUpstream

    conn = MQTTConnection(host, port, False, True, None, None, None, "gw", None,
                          "civicedge-%s-%s" % (SITE, GATEWAY), 60)
    return MQTTUpstream(conn, "senml-json", WINDOW, PER_PUBLISH)


def _agent(a):
    """The agent as ``gateway.app.build`` composes it for this bench: no sources, the outbox
    at ``a["path"]`` (bounds above any backlog), the MQTT forwarder to ``a["port"]``."""
    from gateway.agent import Agent
    from gateway.clock import SystemClock
    from gateway.forward.mqtt import MQTTForwarder
    from gateway.outbox import Outbox
    from gateway.pipeline import Ingest

    clock = SystemClock(wall_trusted=True)
    outbox = Outbox(a["path"], clock=clock, **BOUNDS)
    fwd = MQTTForwarder(_upstream(a["host"], a["port"]), a["password"], SITE, GATEWAY, clock)
    return Agent(Ingest({}), outbox, clock, gateway_id=GATEWAY, forwarder=fwd), outbox, fwd


def _run_agent(agent):
    stop = threading.Event()
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def child_subscriber(a):
    """The platform: QoS 0 on every readings topic, counting messages and readings (each
    SenML record group starts with ``bseq``). ``expect N`` resets the counts; ``report S``
    waits up to S s for N readings, 0.5 s more for any extra copies, then reports."""
    import paho.mqtt.client as mqtt

    lock, ready, reached = threading.Lock(), threading.Event(), threading.Event()
    st = {"msgs": 0, "readings": 0, "target": None, "t_reached": None}

    def on_message(client, userdata, m):
        n = m.payload.count(b'"bseq"')
        with lock:
            st["msgs"] += 1
            st["readings"] += n
            if st["target"] is not None and st["readings"] >= st["target"] \
                    and st["t_reached"] is None:
                st["t_reached"] = time.monotonic()
                reached.set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="platform-bench")
    c.username_pw_set("platform", a["password"])
    c.on_connect = lambda client, *args: client.subscribe("civicedge/v1/+/+/readings", qos=0)
    c.on_subscribe = lambda *args: ready.set()
    c.on_message = on_message
    c.connect(a["host"], a["port"])
    c.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "expect":
            with lock:
                st.update(msgs=0, readings=0, target=int(arg), t_reached=None)
                reached.clear()
            print("ok", flush=True)
        elif cmd == "report":
            reached.wait(float(arg))
            time.sleep(0.5)
            with lock:
                print(json.dumps(st), flush=True)


def _python_kb():
    """VmHWM of a bare interpreter (``python -c`` reading its own status)."""
    out = subprocess.run([sys.executable, "-c", "print(open('/proc/self/status').read())"],
                         capture_output=True, text=True, check=True).stdout
    return int(next(ln for ln in out.splitlines() if ln.startswith("VmHWM:")).split()[1])
