"""The boot's configuration with ``config.valid``, the validated result kept on the flash
(``app.startup.configure`` loads this module for the boot and releases it after).

A deep-sleep wake whose inputs are unchanged does not load the validator at all: loading it
(``app.config`` and its schema, the largest code the node loads, every name interned again)
was the largest part of a wake's CPU. The inputs are the exact bytes of ``config.json``,
``secrets.json``, the overrides file and its temporary file, and the firmware version in
``manifest.json`` (an update may change the schema's defaults), with the size and mtime of
the validator's own module files; their SHA-256 heads the cache, then the SHA-256 of the
rest, the validated configuration as JSON. The firmware version (a SHA-256 of every code
file, the validator's included) is read from the manifest's first bytes, where the build
writes it (``civicedge/firmware_build.py``): the rest lists each file's hash and size (~15
KB, read and hashed at every wake before, for nothing the validation depends on); a manifest
without the version in its head is digested whole. The cache holds no secret: on a hit
``secrets.json`` (whose bytes were validated: they are in the digest) is read again without
the validator.
A cache that is missing, torn, corrupted or of other inputs is ignored, never trusted: the
files are validated as without a cache, and the cache rewritten (temporary file + rename).
A bad file is never cached, so it is reported at every boot exactly as without a cache.
Runs on MicroPython (and CPython for tests).
"""

import binascii
import errno
import hashlib
import json
import os

# app.downlink.OVERRIDES (tests/unit/test_startup.py checks they agree): while neither it nor
# its temporary file is on the flash — the usual case — there is nothing for app.downlink to
# do at boot, so it is not even imported (its code and names would cost heap for nothing).
_OVERRIDES = "overrides.json"
CACHE = "config.valid"
# what the validated result depends on (the overrides' temporary file: a write that a reset
# cut short, which apply_overrides clears; manifest.json: the firmware version)
_MANIFEST = "manifest.json"
_INPUTS = ("config.json", "secrets.json", _OVERRIDES, _OVERRIDES + ".tmp", _MANIFEST)
# how firmware_build's manifest (json.dumps, indent=1) writes the version, and the bytes of
# its head that hold it (~330 in: the device, board, profile, link and compiler come first)
_VERSION_KEY = b'"firmware_version": "'
_HEAD_BYTES = 512


def _path(root, name):
    return root.rstrip("/") + "/" + name


def _stat(path):
    """``os.stat(path)``, or None if there is no such file."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _open(path):
    """``path`` opened to read bytes, or None if there is no such file (any other error is
    raised)."""
    try:
        return open(path, "rb")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


class Secrets:
    """Validated secrets: ``device_key`` and ``lorawan_app_key`` (bytes or None),
    ``wifi_password`` and ``mqtt_password`` (str or None). Deliberately without methods: its
    repr is the default ``<Secrets object at ...>``, which shows no value, and the class
    keeps no reference to this module or to ``app.config``, which are both released after
    boot."""


def secrets_from(obj):
    """``Secrets`` from a ``secrets.json`` object that has been validated (``app.config``)."""
    out = Secrets()
    out.wifi_password = obj.get("wifi_password")
    out.mqtt_password = obj.get("mqtt_password")
    out.device_key = out.lorawan_app_key = None
    for key in ("device_key", "lorawan_app_key"):
        if obj.get(key + "_hex") is not None:
            setattr(out, key, binascii.unhexlify(obj[key + "_hex"]))
    return out


def _hex(data):
    return binascii.hexlify(hashlib.sha256(data).digest())


def _version(buf, n):
    """The firmware version (bytes) in the first ``n`` bytes of ``buf``, a manifest's head,
    or None if it is not there whole."""
    at = buf.find(_VERSION_KEY)
    if at < 0 or at + len(_VERSION_KEY) > n:
        return None
    at += len(_VERSION_KEY)
    end = buf.find(b'"', at)
    return bytes(memoryview(buf)[at:end]) if at < end <= n else None


def digest(root):
    """SHA-256 (hex, bytes) of the configuration's inputs on the flash at ``root``: each of
    ``_INPUTS``' name, size and bytes (or its absence; of ``manifest.json`` the firmware
    version in its head when it is there), and the size and mtime of the validator's module
    files beside this one (code copied without a new ``manifest.json``). Raises ``OSError``
    only if a file that is there cannot be read."""
    h = hashlib.sha256()
    buf = bytearray(_HEAD_BYTES)
    here = globals().get("__file__") or ""  # none if frozen
    ext = here[here.rfind("."):]
    code = [here[:here.rfind("/") + 1] + name + ext for name in ("config", "config_schema")] if "/" in here else []
    # what is hashed is made as bytes: a new str costs MicroPython a search of its interned
    # strings (it returns the interned one if there is one), bytes do not
    prefix = _path(root, "")
    for name in _INPUTS:
        # opened without a stat first: one littlefs path lookup each (a fetch of the
        # directory's metadata, its CRC checked), not two, at every boot
        f = _open(prefix + name)
        if f is None:
            h.update(name.encode() + b"\0-\0")
            continue
        with f:
            size = f.seek(0, 2)
            f.seek(0)
            n = f.readinto(buf)
            version = _version(buf, n) if name == _MANIFEST else None
            if version is not None:  # (the digest of a whole manifest has its size here)
                h.update(name.encode() + b"\0v\0" + version)
                continue
            h.update(name.encode() + b"\0%d\0%d\0" % (size, 0))
            while n:
                h.update(memoryview(buf)[:n])
                n = f.readinto(buf)
    for name in code:
        st = _stat(name)
        h.update(name.encode() + (b"\0-\0" if st is None else b"\0%d\0%d\0" % (st[6], st[8])))
    return binascii.hexlify(h.digest())


def _cached(root, want):
    """``(cfg, secrets)`` from the cache if ``config.valid`` is whole and of the inputs
    digested as ``want``, else None (never raises: a bad cache is simply not used)."""
    try:
        with open(_path(root, CACHE), "rb") as f:
            head = f.readline().split()
            body = f.read()
        if len(head) != 2 or head[0] != want or head[1] != _hex(body):
            return None
        cfg = json.loads(body)
        with open(_path(root, "secrets.json"), "rb") as f:
            return (cfg, secrets_from(json.loads(f.read()))) if type(cfg) is dict else None
    except (OSError, ValueError, AttributeError):
        return None


def configure(root):
    """``((cfg, secrets), None, hit)`` for the node's flash at ``root``, or ``(None, error,
    False)`` with the ``config.ConfigError`` that a bad file raised. ``hit``: the inputs were
    those of ``config.valid``, whose ``cfg`` is used without importing the validator. Else
    ``config.json`` is validated, the overrides (``app.downlink.apply_overrides``) applied
    when their file is there, ``secrets.json`` checked, the validator released and the result
    cached."""
    try:
        before = digest(root)
    except OSError:
        before = None  # validate as without a cache, and cache nothing
    got = _cached(root, before) if before else None
    if got is not None:
        return got, None, True
    from . import config

    applied = False
    try:
        cfg = config.load_config(_path(root, "config.json"))
        overrides = _path(root, _OVERRIDES)
        if _stat(overrides) or _stat(overrides + ".tmp"):
            from . import downlink  # configuration changes by downlink (docs/protocol-lorawan.md)

            applied = True
            cfg = downlink.apply_overrides(cfg, root, config.validate)
            if cfg["link"]["type"] != "lorawan":  # only a LoRaWAN link takes downlinks (and their counts)
                downlink.release()
        secrets = config.load_secrets(_path(root, "secrets.json"), cfg)
    except config.ConfigError as e:
        return None, e, False  # never cached: reported at every boot
    config.release()
    if before is not None:
        try:
            after = digest(root)
        except OSError:
            after = None
        # apply_overrides may rewrite its file; otherwise the inputs must be those that were
        # read (a file changed meanwhile is validated again at the next boot)
        if after is not None and (after == before or applied):
            _keep(root, cfg, after)
    return (cfg, secrets), None, False


def _keep(root, cfg, inputs):
    """Write ``cfg`` as the validated result of the inputs digested as ``inputs`` (temporary
    file + rename); skipped if its JSON would not read back equal. A flash failure is
    ignored (the next boot validates again)."""
    path = _path(root, CACHE)
    try:
        body = json.dumps(cfg).encode()
        if json.loads(body) != cfg:
            return
        with open(path + ".tmp", "wb") as f:
            f.write(inputs + b" " + _hex(body) + b"\n")
            f.write(body)
        os.rename(path + ".tmp", path)
    except (OSError, ValueError, TypeError):
        try:
            os.remove(path + ".tmp")
        except OSError:
            pass
