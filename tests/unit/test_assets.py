"""The asset register (``civicedge.assets``): one row per device, replaced on reflash,
atomic under a lock, and exported for spreadsheets without running anyone's formula."""

import csv
import io
import os
import re
import stat
import threading

import pytest

from civicedge import assets
from civicedge.inventory import DeviceEntry, Location

MANIFEST = {"firmware_version": "ab" * 32, "config_sha256": "cd" * 32}


def device(device_id="sch1-rm12-co2", room="Room 12", lat=None, lon=None):
    return DeviceEntry(id=device_id, profile="classroom-co2", board="esp32-devkitc", link="serial",
                       gateway="gw1", location=Location(room=room, lat=lat, lon=lon))


def row(device_id="sch1-rm12-co2", result=True, failures=(), **kw):
    return assets.row_for(device(device_id, **kw), "ESP32-D0WD-V3 (revision v3.0)", "24:0a:c4:12:34:56",
                          MANIFEST, None, result, list(failures), flashed_at="2025-03-01T10:15:00Z")


def test_a_row_has_every_column_from_inventory_chip_and_manifest():
    r = row(lat=51.5, lon=-0.12)
    assert set(r) == set(assets.COLUMNS)
    assert (r["device"], r["location"], r["lat"], r["lon"], r["gateway"]) == (
        "sch1-rm12-co2", "Room 12", 51.5, -0.12, "gw1")
    assert (r["firmware_version"], r["config_sha256"], r["micropython_image"]) == ("ab" * 32, "cd" * 32, "")
    assert (r["result"], r["failures"]) == ("pass", "")
    failed = row(result=False, failures=["co2 (scd4x at 0x62, bus 0): not found", "link serial: no"])
    assert (failed["result"], failed["failures"]) == ("fail", "co2 (scd4x at 0x62, bus 0): not found; link serial: no")
    assert row()["lat"] == "" and row()["lon"] == ""


def test_record_keeps_one_row_per_device_the_latest(tmp_path):
    assets.record(tmp_path, row("sch1-rm14-co2"))
    assets.record(tmp_path, row("sch1-rm12-co2", result=False, failures=["x"]))
    assets.record(tmp_path, row("sch1-rm12-co2"))  # reflashed: replaced
    rows = assets.read(tmp_path)
    assert [(r["device"], r["result"]) for r in rows] == [("sch1-rm12-co2", "pass"), ("sch1-rm14-co2", "pass")]
    path = assets.register_path(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # not a secret: the council reads it
    assert path.read_text().splitlines()[0] == ",".join(assets.COLUMNS)


def test_record_refuses_a_row_missing_a_column(tmp_path):
    r = row()
    del r["mac"]
    with pytest.raises(ValueError, match="mac"):
        assets.record(tmp_path, r)
    assert not assets.register_path(tmp_path).exists()


def test_a_file_that_is_not_a_register_is_an_error_naming_it(tmp_path):
    assets.register_path(tmp_path).write_text("name,room\nx,y\n")
    with pytest.raises(assets.AssetError, match="assets.csv: not an asset register"):
        assets.read(tmp_path)
    assert assets.read(tmp_path / "nowhere") == []


def test_concurrent_sessions_lose_no_row(tmp_path):
    ids = ["dev-%02d" % i for i in range(24)]
    threads = [threading.Thread(target=assets.record, args=(tmp_path, row(i))) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["device"] for r in assets.read(tmp_path)] == ids


def test_export_neutralises_formulas_but_the_register_keeps_the_text(tmp_path):
    assets.record(tmp_path, row(room="=HYPERLINK(\"http://x\")"))
    assets.record(tmp_path, row("sch1-rm14-co2", room="-1+2", result=False, failures=["@SUM(A1)"]))
    out = tmp_path / "export.csv"
    text, n = assets.export(tmp_path, out)
    assert n == 2 and out.read_text() == text
    exported = list(csv.DictReader(io.StringIO(text)))
    assert exported[0]["location"] == "'=HYPERLINK(\"http://x\")"
    assert (exported[1]["location"], exported[1]["failures"]) == ("'-1+2", "'@SUM(A1)")
    assert exported[1]["mac"] == "24:0a:c4:12:34:56"  # ordinary cells unchanged
    assert assets.read(tmp_path)[0]["location"] == "=HYPERLINK(\"http://x\")"


def test_utc_now_is_iso_8601_utc_to_the_second():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", assets.utc_now())


def test_the_cli_exports_the_register(tmp_path, capsys):
    import argparse

    from civicedge import cmd_flash

    assets.record(tmp_path, row())
    parser = argparse.ArgumentParser()
    cmd_flash.register(parser.add_subparsers())
    args = parser.parse_args(["assets", "export", "--site-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ",".join(assets.COLUMNS)
    assert out.splitlines()[1].startswith("sch1-rm12-co2,Room 12,")
