"""The parsed form of a scenario (``simulators.fleet.scenario`` reads the files): gateways,
groups, nodes and faults, the node derivation (seeds, boot offsets, radio distances) and the
one map from environment names to model classes.

Units: ``start_wall_s`` Unix seconds (UTC); durations and fault times whole seconds (fault
``start_s``/``end_s`` after the scenario start); boot offsets seconds (float); distances metres.
"""

import dataclasses
import functools
import hashlib
import inspect
import random

from simulators.environment import MODELS
from simulators.environment.base import mix_seed


@dataclasses.dataclass(frozen=True)
class GatewaySpec:
    """A gateway: ``id``, ``site`` (upstream topic ``civicedge/v1/<site>/...``) and whether it
    also hears the simulated LoRa radio (``lorawan``)."""

    id: str
    site: str
    lorawan: bool


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """``count`` identical nodes. ``stagger_s`` seconds; ``distances_m`` (lo, hi) metres for a
    lorawan group, else None; ``params`` the environment model's keyword arguments."""

    name: str
    profile: str
    link: str
    count: int
    gateway: str
    ids: str
    first: int
    environment: str
    params: dict
    stagger_s: int
    sets: list
    distances_m: tuple
    numbers: tuple = None  # a reduced copy's chosen n values (``Scenario.reduced``), else None

    def device_ids(self):
        """The group's device ids, in order (``ids`` formatted with n = first, first + 1, ...,
        or with the chosen ``numbers`` of a reduced copy)."""
        ns = self.numbers if self.numbers is not None else range(self.first, self.first + self.count)
        return [self.ids.format(n=n) for n in ns]


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node. ``env_seed`` seeds its environment model; ``boot_offset_s`` (seconds after the
    start, in [0, stagger)) is when it first powers on; ``distances_m`` maps each lorawan
    gateway id to metres (lorawan nodes only, else empty)."""

    id: str
    group: str
    profile: str
    link: str
    gateway: str
    environment: str
    params: dict
    env_seed: int
    boot_offset_s: float
    distances_m: dict
    sets: list


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    """A scheduled fault: ``start_s``/``end_s`` seconds after the scenario start (``end_s`` None
    for an instant kind), ``targets`` resolved gateway or device ids (``target_kind``),
    ``params`` the kind's keys with their defaults, ``target`` the file's own words."""

    kind: str
    start_s: int
    end_s: int
    targets: list
    target_kind: str
    params: dict
    target: object = None


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A parsed scenario (see the module docstring). ``start_wall_s`` Unix seconds (UTC);
    ``duration_s``, ``sample_s`` seconds; ``path`` the file's path (str) or None."""

    name: str
    title: str
    seed: int
    start_wall_s: int
    duration_s: int
    sample_s: int
    gateways: list
    groups: list
    faults: list
    path: str = None

    @property
    def end_wall_s(self):
        """Unix seconds at the end of the run."""
        return self.start_wall_s + self.duration_s

    def gateway(self, gateway_id):
        """The ``GatewaySpec`` of ``gateway_id``; ``KeyError`` if none."""
        for g in self.gateways:
            if g.id == gateway_id:
                return g
        raise KeyError(gateway_id)

    def nodes(self):
        """Every node as a ``NodeSpec``, in group order."""
        lorawan_gws = [g.id for g in self.gateways if g.lorawan]
        weather_seed = mix_seed(self.seed, "weather", 0)
        out = []
        for g in self.groups:
            params = dict(g.params)
            if "weather_seed" not in params and "weather_seed" in _model_arguments(g.environment):
                params["weather_seed"] = weather_seed
            for device_id in g.device_ids():
                key = _id_int(device_id)
                boot = random.Random(mix_seed(self.seed, "boot", key)).random() * g.stagger_s
                distances = {}
                if g.link == "lorawan":
                    lo, hi = g.distances_m
                    for gw in lorawan_gws:
                        u = random.Random(mix_seed(self.seed, "distance." + gw, key)).random()
                        distances[gw] = lo + (hi - lo) * u
                out.append(NodeSpec(device_id, g.name, g.profile, g.link, g.gateway, g.environment, dict(params),
                                    mix_seed(self.seed, "env", key), boot, distances, list(g.sets)))
        return out

    def reduced(self, nodes_per_group=None, duration_s=None, nodes=None, squeeze_faults_s=None):
        """A smaller copy for tests: the same seed (so the nodes kept are identical), fewer
        nodes, the first ``duration_s`` seconds.

        Nodes: ``nodes`` (device ids and/or group names; None: every group) keeps only those,
        in group order, and a group left with none is gone; then ``nodes_per_group`` keeps the
        first N of what each group has left. A gateway no group is left for is gone (it would
        have no source), and so are faults aimed only at gone ones.

        Faults: a node fault whose targets vanish moves to the first remaining node of their
        group, and is dropped only if the group is gone. Without ``squeeze_faults_s`` the
        schedule is clipped: a fault starting at or after the new end is dropped, a window
        running past it is cut at it. With ``squeeze_faults_s`` (seconds) the whole day's
        schedule is squeezed into the shorter run instead, so every fault still happens: each
        start is scaled by ``duration_s / the original duration`` (the faults keep their order
        and their relative place in the run), and each window keeps its length up to
        ``squeeze_faults_s`` (a longer one is cut to that), ending at the new end at the
        latest; a drift cut short drifts faster (its ``magnitude`` per hour scaled by the
        original length over the new), so it reaches the same offset by its end. Windows that
        did not overlap may then overlap (on different targets in the shipped scenarios).

        A stagger longer than half the new duration is cut to half, so every node still boots
        in the run. Raises ``ValueError`` for a bad argument or an unknown name in ``nodes``."""
        n = nodes_per_group
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError("nodes_per_group must be None or an int >= 1, got %r" % (n,))
        dur = self.duration_s if duration_s is None else duration_s
        if isinstance(dur, bool) or not isinstance(dur, int) or not 1 <= dur <= self.duration_s:
            raise ValueError("duration_s must be None or an int from 1 to %d, got %r" % (self.duration_s, duration_s))
        squeeze = squeeze_faults_s
        if squeeze is not None and (isinstance(squeeze, bool) or not isinstance(squeeze, int) or squeeze < 1):
            raise ValueError("squeeze_faults_s must be None or an int >= 1 (seconds), got %r" % (squeeze,))
        groups = self._reduced_groups(n, dur, nodes)
        # a gateway no node is left for would start with no source (its sources are its own
        # nodes' links, simulators/fleet/site.py): gone too, even one on LoRaWAN that would hear
        # the radio nodes left
        gateways = [gw for gw in self.gateways if any(g.gateway == gw.id for g in groups)]
        gateway_ids = {gw.id for gw in gateways}
        kept = {g.name: g.device_ids() for g in groups}
        group_of = {d: g.name for g in self.groups for d in g.device_ids()}
        faults = []
        for f in self.faults:
            start, end, params = f.start_s, f.end_s, f.params
            if squeeze is not None:
                start = f.start_s * dur // self.duration_s
                end = None if f.end_s is None else min(start + min(f.end_s - f.start_s, squeeze), dur)
                if params.get("mode") == "drift" and end is not None and end - start < f.end_s - f.start_s:
                    params = dict(params, magnitude=params["magnitude"] * (f.end_s - f.start_s) / (end - start))
            elif f.start_s >= dur:
                continue
            else:
                end = None if f.end_s is None else min(f.end_s, dur)
            targets = f.targets
            if f.target_kind == "node":
                targets = []
                for t in f.targets:
                    remaining = kept.get(group_of[t])
                    t = t if remaining and t in remaining else (remaining[0] if remaining else None)
                    if t is not None and t not in targets:
                        targets.append(t)
                if not targets:
                    continue
            elif f.target_kind == "gateway":
                targets = [t for t in f.targets if t in gateway_ids]
                if not targets:
                    continue
            faults.append(dataclasses.replace(f, start_s=start, end_s=end, targets=list(targets), params=params))
        return dataclasses.replace(self, duration_s=dur, sample_s=min(self.sample_s, dur), gateways=gateways,
                                   groups=groups, faults=faults)

    def _reduced_groups(self, n, dur, nodes):
        """The groups of ``reduced``: the nodes chosen, the stagger fitted to ``dur``."""
        if nodes is not None:
            nodes = [nodes] if isinstance(nodes, str) else list(nodes)
            names = {g.name for g in self.groups} | {d for g in self.groups for d in g.device_ids()}
            unknown = [x for x in nodes if x not in names]
            if unknown:
                raise ValueError("nodes: %r is neither a group name nor a device id of this scenario" % unknown[0])
        out = []
        for g in self.groups:
            numbers = list(g.numbers if g.numbers is not None else range(g.first, g.first + g.count))
            if nodes is not None and g.name not in nodes:
                numbers = [k for k, d in zip(numbers, g.device_ids()) if d in nodes]
            numbers = numbers if n is None else numbers[:n]
            if not numbers:
                continue
            stagger = g.stagger_s if g.stagger_s <= dur // 2 else dur // 2
            contiguous = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            out.append(dataclasses.replace(g, count=len(numbers), first=numbers[0], stagger_s=stagger,
                                           numbers=None if contiguous else tuple(numbers)))
        return out

    def to_dict(self):
        """The scenario as JSON-able data (for the run record)."""
        d = dataclasses.asdict(self)
        d["end_wall_s"] = self.end_wall_s
        for g in d["groups"]:
            g["distances_m"] = None if g["distances_m"] is None else list(g["distances_m"])
            g["numbers"] = None if g["numbers"] is None else list(g["numbers"])
        return d


def make_environment(node):
    """The environment model of ``node`` (a ``NodeSpec``): an object with ``at(wall_s) ->
    {quantity: value}``. The one place that maps environment names to classes. Raises
    ``ValueError`` for an unknown environment, and the model's own ``TypeError``/``ValueError``
    for bad params."""
    cls = MODELS.get(node.environment)
    if cls is None:
        raise ValueError("environment must be one of %s, got %r" % (", ".join(sorted(MODELS)), node.environment))
    return cls(seed=node.env_seed, **node.params)


@functools.lru_cache(maxsize=None)
def _model_arguments(environment):
    cls = MODELS.get(environment)
    return tuple(inspect.signature(cls.__init__).parameters) if cls is not None else ()


def _id_int(device_id):
    """A stable 64-bit int from a device id (BLAKE2b; never ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(device_id.encode(), digest_size=8).digest(), "little")
