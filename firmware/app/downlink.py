"""Downlinks from the network: configuration changes, checked and applied at the next boot.

Theory of operation
-------------------
A downlink on ``PORT_CONFIG`` (10) is a small CBOR map (RFC 8949) of configuration fields
to their new values, e.g. ``{"interval_s": 60}`` (``a1 6a 69 6e 74 65 72 76 61 6c 5f 73
18 3c``, 14 bytes). Only the keys in ``ALLOWED`` may be changed, each to an integer; a key is
a top-level field except those ``PATHS`` maps into a section (``max_delay_s`` is
``link.lorawan.max_delay_s``: a node whose link has no such section rejects it);
anything else — bytes that are not exactly one CBOR map (``protocol.cbor.loads``, strict:
no duplicate keys, no tags, no indefinite lengths, no trailing bytes, bounded lengths and
depth), an empty map, an unknown key, a value that is not an int — is rejected whole. A
well-formed change is then checked by the node's own validator (``app.config.validate``)
on the configuration with the change merged in, so the ranges and the cross-field rules
(``mean_period_s`` a multiple of ``interval_s``, an SCD4x in low-power mode needs
``interval_s`` >= 30, ...) are exactly those ``config.json`` obeys; they live only in
``config_schema.py``.

When: a change takes effect at the next boot, so it is also *checked* at the next boot,
when the validator is loaded anyway and the heap is fresh (the validator and its schema
take ~40 KB, more than a LoRaWAN node has to spare while it is sending). On receipt,
``receive`` only refuses what is plainly not a change (another port, an empty or oversized
payload, a full inbox) and keeps the raw payload in the ``inbox`` of ``overrides.json``.
A deep-sleeping node boots at its next wake; a light-sleeping (mains) node would never boot
again by itself, so ``receive`` sets ``kept`` and the composition root (``app.main``) restarts
after the cycle's sleep. At boot ``app.startup`` calls ``apply_overrides`` between loading
``config.json`` and using it:
the inbox is worked through in order (each change checked against the configuration with
the changes before it), then the file is rewritten without it. The outcomes are counted
(``downlinks_applied``, ``downlinks_rejected``) and handed to the link's counters by
``take_counts`` — the status record reports them.

The file is ``{"set": {key: value}, "base": {key: value}, "inbox": [hex, ...]}``, always
written to a temporary file and renamed over the old one, so a power cut leaves the old or
the new file, never a partial one. ``base`` is what ``config.json`` said for each key when
the override was made: if a re-flash changes that value, the engineer's newer setting wins
and the override of that key is dropped. An override file that is unreadable, or whose
overrides no longer validate (the configuration changed under it), is removed and
reported on the console — it never stops the node.

Authenticity: a LoRaWAN downlink's MIC (AES-CMAC under the session's network key) and its
frame counter are checked by the modem before it reports the frame, and the payload is
encrypted under the application session key, so only the network and application servers
this node joined can send one; this module guards against malformed or out-of-range
content, not forgery.

``parse_change`` and ``merge_change`` are pure; ``receive`` and ``apply_overrides`` do the
file I/O and never raise for bad content. Runs on MicroPython and CPython.
"""

import binascii
import json
import os
import sys

from drivers import forget

PORT_CONFIG = 10
ALLOWED = ("interval_s", "status_every_n_cycles", "mean_period_s", "max_delay_s")  # int fields
PATHS = {"max_delay_s": ("link", "lorawan")}  # key -> the section holding it (else top level)
MAX_PAYLOAD = 64  # bytes; a change of all four keys is 59
INBOX_MAX = 4  # downlinks kept for the next boot
OVERRIDES = "overrides.json"
_KEY_MAX = 32  # longest CBOR text or map length the decoder accepts here
_FILE_MAX = 2048

_counts = {"downlinks_applied": 0, "downlinks_rejected": 0}  # this boot's, for take_counts
kept = False  # a change was kept for the next boot during this one (app.main restarts a mains node)


class DownlinkError(ValueError):
    """A downlink that is not an acceptable configuration change (the message says why)."""


def _path(root, name):
    return root.rstrip("/") + "/" + name


def _count(counters, name):
    counters[name] = counters.get(name, 0) + 1


# -- pure ----------------------------------------------------------------------------------
def _section(cfg, key):
    """The dict of ``cfg`` that holds ``key`` (``PATHS``), or None if the node has none."""
    node = cfg
    for name in PATHS.get(key, ()):
        node = node.get(name) if type(node) is dict else None
    return node if type(node) is dict else None


def get_field(cfg, key):
    """The configuration's value of downlink key ``key`` (None if its section is absent)."""
    node = _section(cfg, key)
    return None if node is None else node.get(key)


def with_field(cfg, key, value):
    """A copy of ``cfg`` with ``key`` set to ``value``: only the dicts on its path are copied.
    ``DownlinkError`` if the node has no section for it."""
    path = PATHS.get(key, ())
    out = dict(cfg)
    node = out
    for name in path:
        inner = node.get(name)
        if type(inner) is not dict:
            raise DownlinkError("%s: this node has no %s section" % (key, ".".join(path)))
        node[name] = dict(inner)
        node = node[name]
    node[key] = value
    return out


def parse_change(payload):
    """The change a port-10 payload asks for: a dict of allowed keys to ints.

    Raises ``DownlinkError`` for anything else (never another exception)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DownlinkError("payload must be bytes")
    if not 0 < len(payload) <= MAX_PAYLOAD:
        raise DownlinkError("payload must be 1..%d bytes, got %d" % (MAX_PAYLOAD, len(payload)))
    had = "protocol.cbor" in sys.modules
    from protocol import cbor

    try:
        obj = cbor.loads(payload, max_depth=2, max_len=_KEY_MAX)
    except ValueError as e:  # cbor.CBORError
        raise DownlinkError("not CBOR: %s" % e)
    finally:
        if not had:  # a LoRaWAN node needs no CBOR otherwise: give its heap back
            forget("protocol.cbor")
        forget("protocol.cbor_decode")  # cbor.loads imports it; nothing else on a node decodes
    if type(obj) is not dict or not obj:
        raise DownlinkError("must be a non-empty CBOR map")
    for key in obj:
        if type(key) is not str or key not in ALLOWED:
            raise DownlinkError("key %r may not be changed by a downlink; allowed: %s"
                                % (key, ", ".join(ALLOWED)))
        if type(obj[key]) is not int:
            raise DownlinkError("%s must be an integer" % key)
    return obj


def merge_change(cfg, overrides, change, validate):
    """``(overrides', cfg')`` after ``change``: the overrides ``{"set": ..., "base": ...}``
    and the validated configuration with them applied.

    ``cfg`` is the validated ``config.json``, ``overrides`` the overrides in force (None:
    none), ``validate`` the node's validator (``config.validate``). Raises
    ``DownlinkError`` (naming the field) if the result would not validate."""
    old = overrides if overrides is not None else {"set": {}, "base": {}}
    new_set = dict(old["set"])
    new_base = dict(old["base"])
    for key in change:
        if _section(cfg, key) is None:
            raise DownlinkError("%s: this node has no %s section" % (key, ".".join(PATHS[key])))
        new_base[key] = new_base.get(key, get_field(cfg, key))
        new_set[key] = change[key]
        if new_set[key] == new_base[key]:  # back to config.json's value: no override needed
            del new_set[key]
            del new_base[key]
    merged = cfg
    for key in new_set:
        merged = with_field(merged, key, new_set[key])
    try:
        out = validate(merged, OVERRIDES)
    except ValueError as e:  # ConfigError
        raise DownlinkError("rejected by the configuration rules: %s" % (e,))
    return {"set": new_set, "base": new_base}, out


def _check_doc(doc):
    """``doc`` if it is a well-formed overrides file, else None."""
    if type(doc) is not dict or type(doc.get("set")) is not dict or type(doc.get("base")) is not dict:
        return None
    for key in doc["set"]:
        if key not in ALLOWED or type(doc["set"][key]) is not int or type(doc["base"].get(key)) is not int:
            return None
    inbox = doc.get("inbox", [])
    if type(inbox) is not list or len(inbox) > INBOX_MAX:
        return None
    for item in inbox:
        if type(item) is not str or len(item) > 2 * MAX_PAYLOAD:
            return None
    return doc


# -- the flash -----------------------------------------------------------------------------
def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def read_overrides(root):
    """The overrides file as a dict, or None (absent or unreadable)."""
    try:
        with open(_path(root, OVERRIDES), "rb") as f:
            data = f.read(_FILE_MAX)
        return _check_doc(json.loads(data))
    except (OSError, ValueError):
        return None


def write_overrides(root, doc):
    """Write ``doc`` atomically (temp file, then rename); nothing to keep removes the file.
    ``OSError`` if the flash fails (the old file, if any, is left as it was)."""
    path = _path(root, OVERRIDES)
    if not doc["set"] and not doc.get("inbox"):
        _remove(path)
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(doc).encode())
    try:
        os.rename(tmp, path)
    except OSError:
        _remove(path)  # a filesystem that will not rename over a file
        os.rename(tmp, path)


# -- on receipt (the link) and at boot (app/startup.py) ---------------------------------------
def receive(port, payload, root, counters=None):
    """Keep a downlink for the next boot; True if kept. Another port, an empty or oversized
    payload, a full inbox or a flash failure is counted in ``counters["downlinks_rejected"]``
    at once. Sets the module's ``kept``. Never raises."""
    global kept
    counters = counters if counters is not None else {}
    try:
        if port != PORT_CONFIG:
            raise DownlinkError("no application on port %r" % (port,))
        if not isinstance(payload, (bytes, bytearray)) or not 0 < len(payload) <= MAX_PAYLOAD:
            raise DownlinkError("payload must be 1..%d bytes" % MAX_PAYLOAD)
        path = _path(root, OVERRIDES)
        doc = read_overrides(root)
        if doc is None:
            if _exists(path):
                raise DownlinkError("%s is unreadable; the next boot removes it" % path)
            doc = {"set": {}, "base": {}}
        inbox = doc.get("inbox", [])
        if len(inbox) >= INBOX_MAX:
            raise DownlinkError("inbox full")
        doc["inbox"] = inbox + [binascii.hexlify(payload).decode()]
        write_overrides(root, doc)
        kept = True
        return True
    except (DownlinkError, OSError):
        _count(counters, "downlinks_rejected")
        return False


def apply_overrides(cfg, root, validate):
    """At boot: ``cfg`` (validated ``config.json``) with the overrides on flash and the
    downlinks received since the last boot applied, validated again by ``validate``
    (``config.validate``); ``cfg`` itself if there are none. Counts each downlink's outcome
    for ``take_counts``. Never raises for content; a flash failure leaves the file as it is."""
    path = _path(root, OVERRIDES)
    _remove(path + ".tmp")  # a write cut short: the old file (if any) is still whole
    doc = read_overrides(root)
    if doc is None:
        if _exists(path):
            print("overrides: %s is unreadable; removed" % path)
            _remove(path)
        return cfg
    held = {"set": {}, "base": {}}
    for key in doc["set"]:
        if get_field(cfg, key) == doc["base"][key]:  # else a newer config.json set it: that wins
            held["set"][key] = doc["set"][key]
            held["base"][key] = doc["base"][key]
    try:
        held, out = merge_change(cfg, held, {}, validate)
    except DownlinkError as e:
        print("overrides: %s; removed" % e)
        held, out = {"set": {}, "base": {}}, cfg
    for item in doc.get("inbox", ()):
        try:
            held, out = merge_change(cfg, held, parse_change(binascii.unhexlify(item)), validate)
            _count(_counts, "downlinks_applied")
        except ValueError:  # DownlinkError, or hex that is not (binascii.Error)
            _count(_counts, "downlinks_rejected")
    if held != doc:
        try:
            write_overrides(root, held)
        except OSError:
            pass
    return out if held["set"] else cfg


def take_counts(counters):
    """Add this boot's downlink outcomes to ``counters`` (the link's) once."""
    for name in _counts:
        if _counts[name]:
            counters[name] = counters.get(name, 0) + _counts[name]
            _counts[name] = 0


def release():
    """Forget this module once boot has applied the overrides, so its heap can be collected.
    Only a node whose link receives downlinks (LoRaWAN) keeps it: ``receive`` runs there,
    and ``take_counts`` reports this boot's outcomes (they go with the module, so the caller
    releases it only where nothing would report them)."""
    forget(__name__)
