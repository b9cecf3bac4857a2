"""The gateway's composition root: configuration and secrets in, a ready ``Agent`` out.

``build(cfg, secrets)`` is the ONLY place that reads the configuration tree, loads the
deployment profiles and picks sources and the forwarder (ARCHITECTURE.md "Composition
roots"). It opens the outbox, resumes the pipeline's replay state and the alarm engine's
state from it (``gateway.outbox_state``), and wires:

- ``Ingest`` with the device keys (``Secrets.device_keys``) and the devEUI map of
  ``cfg.devices``;
- ``AlarmEngine`` with each device's rules from its profile (``hardware/profiles/``, read
  from ``cfg.hardware_dir`` as ``gateway check`` does) and the site's overrides
  (``[alarms.<profile>.<id>]``), in the site's time zone (``site.timezone``, default
  Europe/London);
- the sources of ``cfg.sources`` and the forwarder of ``cfg.upstream_*``, imported by module
  path only when configured (a site without LoRaWAN never imports the modem code). The Pi's
  own sensors get their settings (``sensor_options``: calibration sheets, bin depths) and an
  ``epoch_floor``: the newest boot epoch the pipeline accepted from that device, so even a
  lost ``local-i2c.json`` never restarts its epochs at 1 (new readings would reuse the keys
  of old ones, which upstream discards as duplicates).

Tests pass ``sources=`` / ``forwarder=`` (byte-level fakes) and a ``VirtualClock``; then
nothing is imported or opened beyond the outbox. With no clock given, the production
``SystemClock`` is used and wall time is trusted once the kernel says NTP has synchronised
(``ntp_synchronized``), re-checked every minute by the agent.
"""

import ctypes
import importlib
import logging
import os
from zoneinfo import ZoneInfo

from civicedge.hardware_render import load_profile
from gateway.agent import STATE_ALARMS, STATE_REPLAY, Agent
from gateway.alarms import AlarmEngine, applies, rules_from_profile
from gateway.outbox import Outbox
from gateway.pipeline import Ingest

log = logging.getLogger("civicedge.gateway")

LOCAL_KEY_BYTES = 32
LOCAL_STATE_FILE = "local-i2c.json"
SOURCES = {"serial": "gateway.sources.serial:SerialSource",
           "site_broker": "gateway.sources.site_mqtt:SiteMQTTSource",
           "chirpstack": "gateway.sources.chirpstack:ChirpStackSource",
           "i2c": "gateway.sources.local_i2c:LocalI2CSource"}
FORWARDERS = {"mqtt": "gateway.forward.mqtt:MQTTForwarder",
              "lorawan": "gateway.forward.lorawan:LoRaWANForwarder"}
_TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"  # systemd-timesyncd, once synced
_TIME_ERROR = 5  # adjtimex(2): "the system clock is not synchronized"


def load_class(path):
    """``"package.module:Name"`` -> the class. Raises ``ImportError`` saying which part of
    the gateway is missing."""
    module, name = path.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError("%s is not available (%s); is this civicedge installation "
                          "complete?" % (path, e)) from e


def ntp_synchronized():
    """True if the kernel's clock is synchronised: systemd-timesyncd's flag file, else
    ``adjtimex`` read-only, else (the unit's ``ProtectClock=yes`` filters ``adjtimex``; chrony
    writes no flag file) ``timedatectl``, which asks systemd-timedated. False if not or if it
    cannot tell (records then carry ``time_unsynced`` and alarm windows wait: the safe side)."""
    if os.path.exists(_TIMESYNC_FLAG):
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex (~208 bytes); modes = 0: read
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):
        state = -1
    if state != -1:
        return state != _TIME_ERROR
    import subprocess

    try:
        out = subprocess.run(["timedatectl", "show", "--property=NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == "yes"


def wall_checker(clock, synchronized=ntp_synchronized):
    """A callable for ``Agent(wall_check=...)``: sets ``clock``'s wall trust from
    ``synchronized()`` and logs each change."""
    def check():
        trusted = bool(synchronized())
        if trusted != clock.wall_trusted():
            clock.set_wall_trusted(trusted)
            log.info("wall clock %s", "trusted now (NTP synchronised)" if trusted else
                     "no longer trusted (NTP not synchronised): records get time_unsynced "
                     "and alarm windows wait")
    return check


def device_rules(cfg, profiles=None):
    """``{device_id: [rules]}`` from each device's profile and the site's overrides.
    Raises ``ValueError`` (or ``civicedge.hardware_render.BuildError``) naming the problem."""
    profiles = {} if profiles is None else profiles
    overrides = {}
    for o in cfg.alarm_overrides:
        overrides.setdefault(o.profile, {})[o.alarm_id] = dict(o.values, enabled=o.enabled)
    out = {}
    for d in cfg.devices:
        if d.profile not in profiles:
            profiles[d.profile] = load_profile(d.profile, cfg.hardware_dir)
        prof = profiles[d.profile]
        ids = {s.get("id") for s in prof.get("alarms") or ()
               if isinstance(s, dict) and applies(s, d.attributes)}
        mine = {k: v for k, v in overrides.get(d.profile, {}).items() if k in ids}
        out[d.id] = rules_from_profile(prof, d.attributes, mine)
    return out


def _saved(outbox, name):
    try:
        return outbox.load_state(name, None)
    except ValueError as e:
        log.error("%s; starting that state afresh", e)
        return None


def _resume(make, saved, what, path, agent_notes):
    """``make(saved)``, or ``make(None)`` after logging why ``saved`` could not be used."""
    if saved is not None:
        try:
            return make(saved)
        except ValueError as e:
            log.error("the %s state stored in %s cannot be used (%s): %s start afresh",
                      what, path, e, what)
            agent_notes.append("state_resets." + what)
    return make(None)


def quality_rules(profile):
    """A profile's ``[quality]`` completed from ``protocol.quality.DEFAULT_RULES``, as the
    firmware build completes a node's (so the Pi's sensors are flagged as a node's are)."""
    from protocol.quality import DEFAULT_RULES

    rules = {q: dict(r) for q, r in DEFAULT_RULES.items()}
    for q, r in (profile.get("quality") or {}).items():
        rules[q] = dict(DEFAULT_RULES.get(q, {}), **r)
    return rules


def build_sources(cfg, secrets, clock, keys, profiles=None, *, local_epoch_floor=0, i2c_bus=None):
    """The configured sources (classes imported here, by module path). The Pi's own sensors
    keep their boot epoch and unacked readings in ``<data_dir>/local-i2c.json``; their new
    epoch is above ``local_epoch_floor`` (the pipeline's); ``i2c_bus``: a bus object for them
    (tests: a ``SimI2CBus``; None: ``/dev/i2c-<bus>``)."""
    s, out = cfg.sources, []
    for serial in s.serial:
        out.append(load_class(SOURCES["serial"])(serial, clock))
    if s.site_broker:
        ids = [d.id for d in cfg.devices if d.link == "mqtt"]
        out.append(load_class(SOURCES["site_broker"])(
            s.site_broker, secrets.password("sources.site_broker"), ids, clock))
    if s.chirpstack:
        euis = {d.dev_eui: d.id for d in cfg.devices if d.dev_eui}  # for gap records
        out.append(load_class(SOURCES["chirpstack"])(
            s.chirpstack, secrets.password("sources.chirpstack"), clock, f_port=s.chirpstack.f_port,
            devices=euis, max_held=s.chirpstack.max_held))
    if s.i2c:
        dev = next(d for d in cfg.devices if d.id == s.i2c.device_id)
        prof = (profiles or {}).get(dev.profile) or load_profile(dev.profile, cfg.hardware_dir)
        out.append(load_class(SOURCES["i2c"])(
            s.i2c, keys[s.i2c.device_id], clock, i2c_bus,
            state_path=os.path.join(cfg.data_dir, LOCAL_STATE_FILE), epoch_floor=local_epoch_floor,
            sensor_options={x.name: dict(x.options) for x in s.i2c.sensors},
            quality_rules=quality_rules(prof)))
    return out


def build_forwarder(cfg, secrets, clock, backoff=None):
    """The configured forwarder (exactly one upstream is configured). ``backoff``: the MQTT
    forwarder's reconnect ``gateway.backoff.Backoff`` (None: its default, 1-120 s)."""
    if cfg.upstream_mqtt is not None:
        extra = {} if backoff is None else {"backoff": backoff}  # a configured class need not take one
        return load_class(FORWARDERS["mqtt"])(cfg.upstream_mqtt, secrets.password(
            "upstream.mqtt"), cfg.site_id, cfg.gateway_id, clock,
            protocol=cfg.upstream_mqtt.protocol, **extra)
    up = cfg.upstream_lorawan
    return load_class(FORWARDERS["lorawan"])(up, secrets.app_key, clock, max_delay_s=up.max_delay_s)


def build(cfg, secrets, clock=None, *, sources=None, forwarder=None, tz=None, i2c_bus=None,
          **tuning):
    """An ``Agent`` for ``cfg`` (``gateway.config.GatewayConfig``) and ``secrets``
    (``gateway.security.Secrets``, from ``security.enforce``). ``sources`` / ``forwarder``
    replace the configured ones (tests); ``tz`` (a ``tzinfo``) replaces the site's time zone
    ``cfg.timezone``; ``i2c_bus`` is the bus of the Pi's own sensors (tests); ``tuning`` goes
    to ``Agent``. Raises ``OutboxError`` (``OutboxCorrupt``) if the outbox cannot be opened,
    ``ValueError``/``BuildError`` for rules that cannot be built (or a local sensor's state
    file that cannot be read), ``ImportError`` if a configured part is missing; nothing is
    started."""
    wall_check = None
    if clock is None:
        from gateway.clock import SystemClock
        clock = SystemClock(wall_trusted=ntp_synchronized())
        wall_check = wall_checker(clock)
    profiles = {}
    rules = device_rules(cfg, profiles)
    keys = dict(secrets.device_keys)
    local = cfg.sources.i2c.device_id if cfg.sources.i2c else None
    if local is not None and local not in keys:
        # The Pi's own sensors sign frames in this process only: a key for this run is enough.
        keys[local] = os.urandom(LOCAL_KEY_BYTES)
    for d in (cfg.data_dir, os.path.dirname(os.path.abspath(cfg.outbox.path))):
        os.makedirs(d, mode=0o700, exist_ok=True)
    outbox = Outbox(cfg.outbox.path, cfg.outbox.max_bytes, cfg.outbox.max_age_s, clock,
                    history_max_bytes=cfg.outbox.history_max_bytes,
                    history_max_age_s=cfg.outbox.history_max_age_s)
    try:
        notes = []
        zone = tz if tz is not None else ZoneInfo(cfg.timezone)
        engine = _resume(lambda st: AlarmEngine(rules, tz=zone, state=st),
                         _saved(outbox, STATE_ALARMS), "alarms", outbox.path, notes)
        euis = {d.dev_eui: d.id for d in cfg.devices if d.dev_eui}
        ingest = _resume(lambda st: Ingest(keys, st, alarms=engine, dev_euis=euis),
                         _saved(outbox, STATE_REPLAY), "replay", outbox.path, notes)
        # The Pi's own sensors start each run in a boot epoch above the newest the pipeline
        # accepted from them (and above their state file's). Their replay state is kept, not
        # forgotten: it holds that floor across a crash, and a pending reading the pipeline
        # had already stored (its ack lost in the crash) is then a duplicate, not a new row.
        floor = ingest.replay_state()["devices"].get(local, {}).get("e", 0) if local else 0
        if sources is None:
            sources = build_sources(cfg, secrets, clock, keys, profiles, local_epoch_floor=floor,
                                    i2c_bus=i2c_bus)
        if forwarder is None:
            forwarder = build_forwarder(cfg, secrets, clock)
        agent = Agent(ingest, outbox, clock, gateway_id=cfg.gateway_id, sources=sources,
                      forwarder=forwarder, wall_check=wall_check, **tuning)
    except BaseException:
        outbox.close()
        raise
    for name in notes:
        agent.count(name)
    log.info("built: site %s, gateway %s, %d device(s), %d with alarm rules (time zone %s), "
             "outbox %s", cfg.site_id, cfg.gateway_id, len(cfg.devices),
             sum(1 for r in rules.values() if r), getattr(zone, "key", zone), cfg.outbox.path)
    return agent


# -- the process: logging and systemd ------------------------------------------------------------
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}  # sd-daemon(3) "<N>" prefixes journald reads


class OneLineFormatter(logging.Formatter):
    """Each record on ONE line (a traceback too: its lines joined by `` | ``), so journald
    and grep see one entry per event. For journald, a ``<N>`` priority prefix and no time
    (journald stamps it); else an ISO time and the level name."""

    def __init__(self, journal=False):
        fmt = "%(name)s: %(message)s" if journal else \
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
        logging.Formatter.__init__(self, fmt, datefmt="%Y-%m-%dT%H:%M:%S%z")
        self.journal = journal

    def format(self, record):
        line = logging.Formatter.format(self, record).replace("\r", "")
        line = " | ".join(part for part in line.split("\n") if part.strip())
        if self.journal:
            return "<%d>%s" % (_PRIORITY.get(record.levelno, 6), line)
        return line


def stderr_is_journal(environ=None):
    """True if stderr is systemd's journal stream (``JOURNAL_STREAM`` names its device and
    inode, systemd.exec(5))."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(level=logging.INFO, stream=None):
    """Log every logger to stderr (or ``stream``), one line per record (``OneLineFormatter``,
    journald's priority prefixes when stderr is the journal). Returns the handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(journal=stream is None and stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler


def sd_notify(message, environ=None):
    """Send ``message`` (e.g. ``"READY=1"``) to systemd's ``NOTIFY_SOCKET`` (sd_notify(3):
    one datagram on a unix socket; ``@`` is the abstract namespace). Returns True if sent;
    False when not under systemd or it failed (never raises)."""
    import socket

    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    if path[0] == "@":
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(message.encode("utf-8"))
        return True
    except OSError:
        return False
