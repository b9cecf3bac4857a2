"""The asset register: what is installed where, when, and with what firmware.

One CSV per site, ``SITE_DIR/assets.csv``, one row per device — the latest time it was
flashed (``civicedge flash`` writes the row; flashing the device again replaces it):

=================  ==========================================================================
column             meaning
=================  ==========================================================================
device             the device id (the inventory's)
location           room and/or street, as the inventory gives it
lat, lon           decimal degrees, or empty
profile, board     hardware/profiles and hardware/boards names
link               serial / mqtt / lorawan
gateway            the gateway the node reports to
chip               what esptool identified ("ESP32-D0WD-V3 (revision v3.0)")
mac                the chip's base MAC (eFuse), lower-case ``aa:bb:cc:dd:ee:ff``
firmware_version   SHA-256 of the node firmware (the bundle's ``manifest.json``)
config_sha256      SHA-256 of the node's config.json (same firmware, other settings)
micropython_image  SHA-256 of the MicroPython image written, or empty if none was
flashed_at         when the self-test finished, ISO 8601 UTC (``2025-03-01T10:15:00Z``)
result             ``pass`` or ``fail`` (the self-test)
failures           what failed, ``; ``-separated (e.g. "co2 (scd4x) not found at 0x62 on I2C bus 0")
flashed_by         the login name of who ran the tool
=================  ==========================================================================

Writes are atomic (temporary file, fsync, rename) under an exclusive lock on
``assets.csv.lock``, so two flashing sessions on one site directory never lose a row.
``export`` writes the register for the council's records; any cell that a spreadsheet would
run as a formula (starting ``= + - @``, tab or CR) is prefixed with ``'`` (OWASP "CSV
injection"); the file itself keeps the values as they are.
"""

import csv
import datetime
import fcntl
import getpass
import io
import os
import pathlib
from contextlib import contextmanager

from civicedge.provision_files import write_atomic

COLUMNS = ("device", "location", "lat", "lon", "profile", "board", "link", "gateway", "chip", "mac",
           "firmware_version", "config_sha256", "micropython_image", "flashed_at", "result", "failures",
           "flashed_by")
REGISTER = "assets.csv"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class AssetError(ValueError):
    """The register cannot be read (``path``, and what is wrong)."""


def register_path(site_dir):
    return pathlib.Path(site_dir) / REGISTER


def utc_now():
    """Now as ISO 8601 UTC to the second, e.g. ``2025-03-01T10:15:00Z``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def whoami():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def read(site_dir):
    """The register's rows (dicts over ``COLUMNS``), ordered by device; [] if there is none.
    Raises ``AssetError`` if the file is not a register (wrong header)."""
    path = register_path(site_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise AssetError("%s: not an asset register (header %s, expected %s)"
                         % (path, ",".join(reader.fieldnames or ()), ",".join(COLUMNS)))
    return sorted((dict(r) for r in reader), key=lambda r: r["device"])


def to_csv(rows, safe=False):
    """CSV text (header + rows). ``safe``: prefix formula-like cells with ``'``."""
    out = io.StringIO()
    w = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        cells = {k: "" if r.get(k) is None else str(r.get(k)) for k in COLUMNS}
        if safe:
            cells = {k: "'" + v if v.startswith(_FORMULA_START) else v for k, v in cells.items()}
        w.writerow(cells)
    return out.getvalue()


@contextmanager
def _locked(site_dir):
    pathlib.Path(site_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(register_path(site_dir).with_suffix(".csv.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def row_for(device, chip, mac, manifest, image_sha256, result, failures, flashed_at=None):
    """A register row from the inventory's ``DeviceEntry``, esptool's ``chip``/``mac``, the
    bundle's ``manifest`` (dict), the self-test ``result`` (bool) and ``failures`` (strings)."""
    loc = device.location
    return {"device": device.id, "location": loc.describe(), "lat": "" if loc.lat is None else loc.lat,
            "lon": "" if loc.lon is None else loc.lon, "profile": device.profile, "board": device.board,
            "link": device.link, "gateway": device.gateway or "", "chip": chip or "", "mac": mac or "",
            "firmware_version": manifest.get("firmware_version", ""),
            "config_sha256": manifest.get("config_sha256") or "", "micropython_image": image_sha256 or "",
            "flashed_at": flashed_at or utc_now(), "result": "pass" if result else "fail",
            "failures": "; ".join(failures), "flashed_by": whoami()}


def record(site_dir, row):
    """Put ``row`` in the register (replacing the device's previous row); returns the path."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError("row: missing column(s) %s" % ", ".join(missing))
    with _locked(site_dir):
        rows = [r for r in read(site_dir) if r["device"] != row["device"]]
        rows.append({k: row[k] for k in COLUMNS})
        rows.sort(key=lambda r: r["device"])
        path = register_path(site_dir)
        write_atomic(path, to_csv(rows).encode("utf-8"), mode=0o644)
    return path


def export(site_dir, out=None):
    """The register as CSV for the council's records (formula-safe): written to ``out`` (a
    path) or returned as text when ``out`` is None. Returns (text, number of devices)."""
    rows = read(site_dir)
    text = to_csv(rows, safe=True)
    if out is not None:
        write_atomic(pathlib.Path(out), text.encode("utf-8"), mode=0o644)
    return text, len(rows)
