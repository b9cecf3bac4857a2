"""Scenario files: the site a fleet run simulates (gateways, groups of identical nodes, faults).

A scenario is a TOML file (``simulators/scenarios/*.toml``, the format of issue 5's
"Contract 1"). ``load(path)`` / ``loads(text)`` check everything up front
-- unknown keys, types, ranges, references between tables, the profiles' links, the
environment models' parameters -- and return a ``Scenario``; anything wrong is a
``ScenarioError`` naming the file, the table and the key.

Determinism: every random choice derives from the scenario ``seed`` and the device id through
``simulators.environment.base.mix_seed`` (BLAKE2b; never Python's salted ``hash()``), so a
node's environment seed, boot offset and radio distances do not depend on the other nodes,
and ``reduced()`` keeps them. All outdoor models of one scenario share one weather (a
``weather_seed`` derived from the scenario seed) unless a group's params name their own.

Units: times are seconds (ints; ``start_wall_s`` Unix seconds UTC, fault ``start_s``/``end_s``
seconds after the start), boot offsets seconds (float), distances metres (float). The parsed
classes live in ``scenario_spec``, the field parsers in ``scenario_parse``; import them all
from here.
"""

import dataclasses
import functools
import pathlib
import re
import string
import tomllib

from protocol.frame import check_device_id
from simulators.atmodem_radio import CHANNELS_HZ
from simulators.environment import MODELS
from simulators.fleet.scenario_parse import ScenarioError, Table, check_number, json_plain, parse_at, parse_start, show
from simulators.fleet.scenario_spec import FaultSpec, GatewaySpec, GroupSpec, NodeSpec, Scenario, make_environment

PROFILE_DIR = pathlib.Path(__file__).resolve().parents[2] / "hardware" / "profiles"
LINKS = ("serial", "mqtt", "lorawan")
FAILING_MODES = ("nack", "stuck_value", "drift", "spike")
POWER_CUT_DURING = ("any", "flash_write")
# kind -> (target: "gateway" | "node" | "any", windowed, extra keys)
FAULT_KINDS = {
    "broker_outage": ("gateway", True, ()),
    "gateway_power_cut": ("gateway", True, ()),
    "gateway_disk_full": ("gateway", True, ()),
    "node_power_cut": ("node", True, ("during",)),
    "stuck_i2c": ("node", True, ()),
    "failing_sensor": ("node", True, ("mode", "magnitude", "quantity")),
    "lora_interference": ("gateway", True, ("channel_mhz",)),
    "clock_jump": ("any", False, ("jump",)),
}
MAX_DURATION_S = 366 * 86400
MAX_JUMP_S = 3660 * 86400
MAX_COUNT = 1000              # nodes in one group
MAX_NODES = 10000             # nodes in a scenario
MAX_DISTANCE_M = 100000.0
_NOT_ENVIRONMENT = ("battery_v",)   # read by the board's ADC, not from the environment model
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")      # as gateway/config.py: ids go into MQTT topics
_NAME = re.compile(r"[a-z0-9-]{1,64}")
_PROFILE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_ID_SPEC = re.compile(r"(?:0?[0-9]{1,2})?[dxX]?")  # {n:02d}; a bounded width only
_QUANTITY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ID_WHAT = "1-32 of a-z 0-9 -, not starting with '-'"


def load(path):
    """The ``Scenario`` in the TOML file ``path``. Raises ``ScenarioError`` (also for a file
    that cannot be read)."""
    where = str(path)
    try:
        text = pathlib.Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ScenarioError("%s: cannot read: %s" % (where, e.strerror or e), where) from None
    except UnicodeDecodeError:
        raise ScenarioError("%s: not UTF-8 text" % where, where) from None
    return loads(text, where=where, path=where)


def loads(text, where="<string>", path=None):
    """The ``Scenario`` in TOML ``text``; ``where`` names it in messages. Raises ``ScenarioError``."""
    if not isinstance(text, str):
        raise ScenarioError("%s: expected TOML text (str), got %s" % (where, type(text).__name__), where)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError("%s: not valid TOML: %s" % (where, e), where) from None
    except RecursionError:
        raise ScenarioError("%s: not valid TOML: nested too deeply" % where, where) from None
    top = Table(where, "(top level)", data, ("scenario", "gateways", "groups", "faults"))
    head = _scenario_table(where, top.raw("scenario"))
    gateways = _gateways(where, _array_of_tables(top, "gateways", 1))
    groups = _groups(where, _array_of_tables(top, "groups", 1), gateways, head)
    scenario = Scenario(gateways=gateways, groups=groups, faults=[], path=path, **head)
    faults = [_fault(Table(where, "faults[%d]" % i, t, tuple(t)), scenario)   # _fault checks the keys per kind
              for i, t in enumerate(_array_of_tables(top, "faults", 0, default=[]))]
    return dataclasses.replace(scenario, faults=faults)


# -- the tables ------------------------------------------------------------------------------
def _array_of_tables(top, key, min_len, default=None):
    value = top.raw(key) if default is None else top.raw(key, default)
    if not isinstance(value, list) or len(value) < min_len or not all(isinstance(v, dict) for v in value):
        raise top.error(key, "expected at least %d [[%s]] table(s), got %s" % (min_len, key, show(value)))
    return value


def _scenario_table(where, data):
    t = Table(where, "scenario", data, ("name", "title", "seed", "start", "duration", "sample_every"))
    name = t.string("name", pattern=_NAME, what="a name of 1-64 of a-z 0-9 -")
    start = t.raw("start")
    try:
        start_wall_s = parse_start(start)
    except ValueError as e:
        raise t.error("start", str(e)) from None
    duration_s = t.duration("duration", 1, MAX_DURATION_S)
    sample_s = t.duration("sample_every", 1, duration_s, default=300 if duration_s >= 300 else duration_s)
    return {"name": name, "title": t.string("title", default=name), "seed": t.integer("seed", 0, 2 ** 63 - 1, 0),
            "start_wall_s": start_wall_s, "duration_s": duration_s, "sample_s": sample_s}


def _gateways(where, tables):
    out = []
    for i, data in enumerate(tables):
        t = Table(where, "gateways[%d]" % i, data, ("id", "site", "lorawan"))
        gw = GatewaySpec(t.string("id", pattern=_ID, what=_ID_WHAT), t.string("site", pattern=_ID, what=_ID_WHAT),
                         t.boolean("lorawan", False))
        if any(g.id == gw.id for g in out):
            raise t.error("id", "gateway id %r is already used by another [[gateways]] table" % gw.id)
        out.append(gw)
    return out


def _groups(where, tables, gateways, head):
    by_id = {g.id: g for g in gateways}
    owner = {g.id: "gateways" for g in gateways}   # every name a fault target may use -> its table
    out, total = [], 0
    for i, data in enumerate(tables):
        t = Table(where, "groups[%d]" % i, data, ("name", "profile", "link", "count", "gateway", "ids", "first",
                                                  "environment", "stagger", "sets", "distances_m", "params"))
        name = t.string("name", pattern=_NAME, what="a name of 1-64 of a-z 0-9 -")
        if name in owner:
            raise t.error("name", "%r is already the name of something in %s" % (name, owner[name]))
        owner[name] = t.name
        profile_name = t.string("profile", pattern=_PROFILE, what="a profile name (hardware/profiles/<name>.toml)")
        profile = _profile(t, profile_name)
        link = t.choice("link", LINKS)
        links = profile.get("profile", {}).get("links", [])
        if link not in links:
            raise t.error("link", "profile %s has links %s, not %r" % (profile_name, links, link))
        count = t.integer("count", 1, MAX_COUNT)
        total += count
        if total > MAX_NODES:
            raise t.error("count", "the scenario would have more than %d nodes" % MAX_NODES)
        gateway = _group_gateway(t, link, by_id, gateways)
        ids_pattern, first = t.string("ids"), t.integer("first", 0, 10 ** 6, 1)
        environment = t.choice("environment", tuple(sorted(MODELS)))
        params = t.raw("params", {})
        if not isinstance(params, dict) or not json_plain(params):
            raise t.error("params", "expected a table of plain values (no dates or times), got %s" % show(params))
        if "seed" in params:
            raise t.error("params", "'seed' is derived from the scenario's seed and the device id; leave it out")
        stagger_s = t.duration("stagger", 0, head["duration_s"] - 1, 0)
        sets = t.array("sets", [])
        for s in sets:
            if not isinstance(s, str) or not s.partition("=")[0].strip() or "=" not in s:
                raise t.error("sets", "expected strings PATH=VALUE (e.g. 'interval_s=300'), got %s" % show(s))
        distances = _distances(t, link)
        group = GroupSpec(name, profile_name, link, count, gateway, ids_pattern, first, environment, dict(params),
                          stagger_s, list(sets), distances)
        for device_id in _device_ids(t, group):
            if device_id in owner:
                raise t.error("ids", "device id %r is already the name of something in %s"
                              % (device_id, owner[device_id]))
            owner[device_id] = t.name
        _check_environment(t, group, profile, head)
        out.append(group)
    return out


def _group_gateway(t, link, by_id, gateways):
    """The gateway a group talks to: required for serial/mqtt; for lorawan optional (the gateway
    agent that takes its uplinks from the network server), default the first lorawan one."""
    lorawan = [g.id for g in gateways if g.lorawan]
    if link == "lorawan" and not lorawan:
        raise t.error("link", "a lorawan group needs a [[gateways]] table with lorawan = true")
    if link == "lorawan" and not t.has("gateway"):
        return lorawan[0]
    gateway = t.string("gateway")
    if gateway not in by_id:
        raise t.error("gateway", "no [[gateways]] table has id %s (ids: %s)" % (show(gateway), ", ".join(by_id)))
    if link == "lorawan" and not by_id[gateway].lorawan:
        raise t.error("gateway", "gateway %r has lorawan = false; a lorawan group needs a lorawan gateway" % gateway)
    return gateway


def _distances(t, link):
    if link != "lorawan":
        if t.has("distances_m"):
            raise t.error("distances_m", "only a lorawan group has radio distances (this one's link is %s)" % link)
        return None
    value = t.raw("distances_m")
    if not isinstance(value, list) or len(value) != 2:
        raise t.error("distances_m", "expected [lo, hi] in metres, got %s" % show(value))
    lo, hi = (check_number(t, "distances_m", v) for v in value)
    if not 0.0 < lo <= hi <= MAX_DISTANCE_M:
        raise t.error("distances_m", "expected [lo, hi] metres with 0 < lo <= hi <= %g, got %s"
                      % (MAX_DISTANCE_M, show(value)))
    return (lo, hi)


def _device_ids(t, group):
    """The group's device ids, checked: the pattern uses only ``{n}`` fields (any int format
    spec), and makes valid, distinct ids."""
    try:
        parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(group.ids) if f is not None]
    except ValueError as e:
        raise t.error("ids", "not a valid pattern (%s): %s" % (e, show(group.ids))) from None
    fields = [f for f, _, _ in parts]
    if any(f != "n" or conv is not None or not _ID_SPEC.fullmatch(spec) for f, spec, conv in parts):
        raise t.error("ids", "the only field allowed is {n} or {n:SPEC} with an int SPEC such as 02d or 03x "
                      "(e.g. 'sch1-rm{n:02d}-co2'), got %s" % show(group.ids))
    if not fields and group.count > 1:
        raise t.error("ids", "%d nodes need {n} in the pattern to get distinct ids, got %s"
                      % (group.count, show(group.ids)))
    try:
        ids = group.device_ids()
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as e:
        raise t.error("ids", "cannot format %s with an int n: %s" % (show(group.ids), e)) from None
    for device_id in ids:
        try:
            check_device_id(device_id)
        except ValueError:
            raise t.error("ids", "makes %s, not a device id (%s)" % (show(device_id), _ID_WHAT)) from None
    if len(set(ids)) != len(ids):
        raise t.error("ids", "%s does not make distinct ids for n = %d..%d" % (show(group.ids), group.first,
                                                                              group.first + group.count - 1))
    return ids


def _check_environment(t, group, profile, head):
    """Construct the group's model once (for its first node) and read it at the start: bad
    params are an error naming ``params``, and so is a model that does not give every quantity
    the profile measures."""
    probe = Scenario(head["name"], "", head["seed"], head["start_wall_s"], head["duration_s"], head["sample_s"],
                     [], [dataclasses.replace(group, count=1)], [])
    try:
        values = make_environment(probe.nodes()[0]).at(head["start_wall_s"])
    except Exception as e:  # the model's own checks, whatever they raise on odd input
        raise t.error("params", "environment %r refuses these params: %s: %s"
                      % (group.environment, type(e).__name__, e)) from None
    missing = [q for q in _quantities(profile) if not isinstance(values, dict) or q not in values]
    if missing:
        raise t.error("environment", "environment %r does not give %s, which profile %s measures"
                      % (group.environment, ", ".join(missing), group.profile))


def _fault(t, scenario):
    kind = t.choice("kind", tuple(FAULT_KINDS))
    target_need, windowed, extra = FAULT_KINDS[kind]
    allowed = ("kind", "at", "target") + (("duration",) if windowed else ()) + extra
    for key in t.data:
        if key not in allowed:
            if key == "duration":
                raise t.error(key, "%s is instant: it takes no duration" % kind)
            raise t.error(key, "unknown key %s for kind %s (allowed: %s)" % (show(key), kind, ", ".join(allowed)))
    try:
        start_s = parse_at(t.raw("at"), scenario.start_wall_s)
    except ValueError as e:
        raise t.error("at", str(e)) from None
    if not 0 <= start_s < scenario.duration_s:
        raise t.error("at", "%s is %ds after the start: outside the run (0 to %ds)" % (show(t.raw("at")), start_s,
                                                                                    scenario.duration_s))
    end_s = None
    if windowed:
        end_s = start_s + t.duration("duration", 1, MAX_DURATION_S)
        if end_s > scenario.duration_s:
            raise t.error("duration", "the window %ds..%ds after the start ends after the run (%ds)"
                          % (start_s, end_s, scenario.duration_s))
    target_kind, targets = _targets(t, scenario, target_need)
    params = _fault_params(t, kind, scenario, targets, start_s)
    return FaultSpec(kind, start_s, end_s, targets, target_kind, params, t.raw("target"))


def _targets(t, scenario, need):
    raw = t.raw("target")
    names = raw if isinstance(raw, list) else [raw]
    if not names or not all(isinstance(n, str) for n in names):
        raise t.error("target", "expected a gateway id, a device id or a group name (or an array of them), got %s"
                      % show(raw))
    gateways = {g.id: g for g in scenario.gateways}
    groups = {g.name: g.device_ids() for g in scenario.groups}
    devices = {d for ids in groups.values() for d in ids}
    kinds, targets = set(), []
    for name in names:
        if name in gateways:
            kinds.add("gateway")
            found = [name]
        elif name in groups or name in devices:
            kinds.add("node")
            found = groups.get(name, [name])
        else:
            raise t.error("target", "unknown target %s: not a gateway id, a group name or a device id" % show(name))
        targets.extend(d for d in found if d not in targets)
    if len(kinds) > 1:
        raise t.error("target", "mixes gateways and nodes: %s" % show(raw))
    kind = kinds.pop()
    if need != "any" and kind != need:
        raise t.error("target", "this fault needs %s target, got %s (a %s)"
                      % ("a gateway" if need == "gateway" else "a node or group", show(raw), kind))
    return kind, targets


def _fault_params(t, kind, scenario, targets, start_s):
    if kind == "node_power_cut":
        return {"during": t.choice("during", POWER_CUT_DURING, "any")}
    if kind == "failing_sensor":
        mode = t.choice("mode", FAILING_MODES)
        if mode in ("drift", "spike"):
            magnitude = t.number("magnitude")
        elif t.has("magnitude"):
            raise t.error("magnitude", "only modes drift and spike take a magnitude (mode is %s)" % mode)
        else:
            magnitude = None
        quantity = t.string("quantity", None, pattern=_QUANTITY, what="a quantity name such as 'co2_ppm'")
        if quantity is not None:
            profiles = {g.profile for g in scenario.groups if set(g.device_ids()) & set(targets)}
            for p in sorted(profiles):
                measured = _quantities(_profile(t, p))
                if quantity not in measured:
                    raise t.error("quantity", "profile %s measures %s, not %r" % (p, ", ".join(measured), quantity))
        return {"mode": mode, "magnitude": magnitude, "quantity": quantity}
    if kind == "lora_interference":
        not_lora = [g.id for g in scenario.gateways if g.id in targets and not g.lorawan]
        if not_lora:
            raise t.error("target", "gateway %s has lorawan = false: there is no radio to interfere with" % not_lora[0])
        channel_hz = None
        if t.has("channel_mhz"):
            mhz = t.number("channel_mhz")
            channel_hz = next((hz for hz in CHANNELS_HZ if abs(mhz * 1e6 - hz) < 1.0), None)
            if channel_hz is None:
                raise t.error("channel_mhz", "expected one of the EU868 channels %s MHz, got %s"
                              % (", ".join("%g" % (hz / 1e6) for hz in CHANNELS_HZ), show(t.raw("channel_mhz"))))
        return {"channel_hz": channel_hz, "channel_mhz": None if channel_hz is None else channel_hz / 1e6}
    if kind == "clock_jump":
        jump_s = t.duration("jump", -MAX_JUMP_S, MAX_JUMP_S, signed=True)
        if jump_s == 0:
            raise t.error("jump", "a clock jump of 0 s does nothing")
        if scenario.start_wall_s + start_s + jump_s < 0:
            raise t.error("jump", "jumps the clock to before 1970")
        return {"jump_s": jump_s}
    return {}


# -- helpers -----------------------------------------------------------------------------------
def _profile(t, name):
    """``hardware/profiles/<name>.toml`` as a dict; the table's error about ``profile`` if none."""
    try:
        return _read_profile(name)
    except FileNotFoundError:
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))
        raise t.error("profile", "no profile %r (hardware/profiles: %s)" % (name, ", ".join(known))) from None
    except (OSError, ValueError) as e:
        raise t.error("profile", "profile %r cannot be read: %s" % (name, e)) from None


@functools.lru_cache(maxsize=None)
def _read_profile(name):
    with open(PROFILE_DIR / ("%s.toml" % name), "rb") as f:
        return tomllib.load(f)


def _quantities(profile):
    """The quantities a profile's sensors take from the environment (its [quality] tables, less
    what the board measures itself)."""
    return [q for q in profile.get("quality", {}) if q not in _NOT_ENVIRONMENT]


__all__ = ["ScenarioError", "Scenario", "GatewaySpec", "GroupSpec", "NodeSpec", "FaultSpec", "load", "loads",
           "make_environment", "FAULT_KINDS", "LINKS", "FAILING_MODES"]
