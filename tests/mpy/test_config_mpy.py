"""firmware/app/config.py under the MicroPython unix port: the example validates, a bad file is
rejected naming the field and the file, secrets stay out of messages and reprs, and the
module's heap comes back when the composition root drops it after boot."""

import json
import pathlib
import subprocess

from civicedge import firmware_build
from simulators.mpyrun import run_micropython

REPO = pathlib.Path(__file__).resolve().parents[2]

CHECKS = r"""
import gc, json, sys
if ROOT:
    sys.path[:] = [ROOT]  # only the compiled module: nothing from the repository
gc.collect()
free0 = gc.mem_free()
__import__(MOD)
config = sys.modules[MOD]
assert config.__file__.endswith(SUFFIX), config.__file__
cfg = config.load_config(EXAMPLE)
assert cfg["device_id"] == "sch1-rm12-co2", cfg["device_id"]
assert cfg["sensors"][0]["part"] == "scd4x" and cfg["sensors"][0]["address"] == 0x62
assert cfg["link"]["serial"]["ack_timeout_ms"] == 2000
print("EXAMPLE OK")

def expect(obj, field, words):
    f = open(PATH, "w")
    f.write(json.dumps(obj))
    f.close()
    try:
        config.load_config(PATH)
    except config.ConfigError as e:
        assert e.field == field, (e.field, field)
        assert e.source == PATH and str(e).startswith(PATH + ": " + field + ": "), str(e)
        assert words in e.message, e.message
        print("REJECTED", field)
        return
    raise AssertionError("accepted a bad config: " + field)

bad = json.loads(open(EXAMPLE).read())
bad["sensors"].append({"name": "t1", "part": "tmp117", "address": 0x49})
bad["sensors"].append({"name": "t2", "part": "tmp117", "address": 0x49})
expect(bad, "sensors[2].address", "already used by sensors[1]")
bad["sensors"] = bad["sensors"][:1]
bad["sensors"][0]["mode"] = "turbo"
expect(bad, "sensors[0].mode", "not one of")
bad["sensors"][0]["mode"] = "periodic"
bad["interval_s"] = 2.5
expect(bad, "interval_s", "an integer")
bad["interval_s"] = 120
bad["link"] = {"type": "lorawan", "uart": {"id": 2, "tx_pin": 17, "rx_pin": 16}}
expect(bad, "link.modem", "missing")
bad["link"]["modem"] = {"dialect": "rak3172", "reset_pin": 27}
bad["link"]["lorawan"] = {"join_eui": "zz"}
expect(bad, "link.lorawan.join_eui", "hex digits")

KEY = "5f1c9a0e7b3d2c48a6e1f0b9d8c7a6e5"
s = config.validate_secrets({"device_key_hex": KEY, "wifi_password": "a long wifi passphrase"})
assert s.device_key == bytes([0x5f, 0x1c, 0x9a, 0x0e, 0x7b, 0x3d, 0x2c, 0x48, 0xa6, 0xe1, 0xf0, 0xb9,
                               0xd8, 0xc7, 0xa6, 0xe5])
assert KEY not in repr(s) and "passphrase" not in repr(s) and "Secrets" in repr(s)
try:
    config.validate_secrets({"device_key_hex": KEY[:-1] + "x"})
    raise AssertionError("accepted a bad key")
except config.ConfigError as e:
    assert e.field == "device_key_hex" and KEY[:8] not in str(e), str(e)
print("SECRETS OK")

gc.collect()
loaded = free0 - gc.mem_free()
config.release()  # what main.py does after boot: the schema and validator go, s and cfg stay
del config
try:  # the interpreter keeps the last handled exception (a ConfigError above): replace it
    raise ValueError
except ValueError:
    pass
gc.collect()
kept = free0 - gc.mem_free()
assert "Secrets" in repr(s) and s.device_key[0] == 0x5f and cfg["interval_s"] == 120
assert MOD not in sys.modules and MOD + "_schema" not in sys.modules
print("HEAP", json.dumps({"loaded": loaded, "kept": kept}))
"""


def _run(tmp_path, root, mod, suffix, heapsize):
    prelude = "ROOT = %r\nMOD = %r\nSUFFIX = %r\nEXAMPLE = %r\nPATH = %r\n" % (
        root, mod, suffix, str(REPO / "firmware" / "config.example.json"), str(tmp_path / "config.json"))
    rc, out, err = run_micropython(["-c", prelude + CHECKS], sim=False, timeout_s=60, heapsize=heapsize)
    assert rc == 0, out + err
    assert "EXAMPLE OK" in out and "SECRETS OK" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("REJECTED")] == [
        "sensors[2].address", "sensors[0].mode", "interval_s", "link.modem", "link.lorawan.join_eui"]
    return json.loads(out.split("HEAP ", 1)[1].splitlines()[0])


def test_config_source_validates_and_rejects_under_micropython(tmp_path):
    _run(tmp_path, "", "firmware.app.config", "config.py", "128K")


def test_compiled_config_fits_an_esp32_heap_and_gives_it_back(tmp_path):
    """As built for the flash (.mpy), in a ~100 KB heap like an ESP32's."""
    root = tmp_path / "flash"
    (root / "app").mkdir(parents=True)
    # the validator, the schema data it imports, and app.config_cache (its Secrets class)
    for name in ("config", "config_schema", "config_cache"):
        r = subprocess.run([firmware_build.mpy_cross_command(), "-o", str(root / "app" / (name + ".mpy")),
                            "-s", "app/%s.py" % name, str(REPO / "firmware" / "app" / (name + ".py"))],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    heap = _run(tmp_path, str(root), "app.config", "config.mpy", "100K")
    # Loaded, the validator holds ~40 KB on this 64-bit host (less on the 32-bit ESP32); the
    # composition root drops it after boot and keeps only the configuration and interned names.
    assert heap["loaded"] < 60000
    assert heap["kept"] < heap["loaded"] / 3


BOOT = r"""
import json, sys
sys.path[:] = [ROOT]
from app import startup
class Absent:  # where the validator would be: a boot that needed it fails on its first use
    pass
if HIDE:
    sys.modules["app.config"] = Absent()
got, err = startup.configure(FLASH)
if HIDE:
    assert type(sys.modules.pop("app.config")) is Absent
assert err is None, err
print("BOOT", json.dumps({"hits": startup.hits, "validator": "app.config" in sys.modules or "app.config_schema" in sys.modules,
                          "cfg": got[0], "key": list(got[1].device_key)}))
"""


def test_a_wake_with_an_unchanged_flash_does_not_load_the_validator(tmp_path):
    """Compiled, as on the flash: the first boot validates and keeps the result; the next (a
    fresh interpreter, as after a deep sleep) takes it from ``config.valid`` without importing
    ``app.config``; a changed config.json, or firmware version in the manifest, is validated
    again (the rest of the manifest is not digested)."""
    root = tmp_path / "fw"
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "drivers").mkdir()
    # the boot's modules, and drivers (its ``forget``; on the flash it is in lib/)
    for name, src in [("app/%s" % n, REPO / "firmware" / "app" / (n + ".py"))
                      for n in ("config", "config_schema", "config_cache", "startup")] + [
            ("drivers/__init__", REPO / "drivers" / "__init__.py")]:
        r = subprocess.run([firmware_build.mpy_cross_command(), "-o", str(root / (name + ".mpy")),
                            "-s", name + ".py", str(src)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    flash = tmp_path / "flash"
    flash.mkdir()
    doc = json.loads((REPO / "firmware" / "config.example.json").read_text())
    (flash / "config.json").write_text(json.dumps(doc))
    (flash / "secrets.json").write_text(json.dumps({"device_key_hex": bytes(range(16)).hex()}))

    def manifest(version, files):  # as the build writes it: only its version is digested
        info = {"device_id": "sch1-rm12-co2", "board": "b", "profile": "p", "link": "serial",
                "compiler": "MicroPython v1.29.0", "march": None}
        doc = dict(firmware_build.make_manifest(files, {}, info), firmware_version=version)
        (flash / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n")

    manifest("a" * 64, {"app/main.mpy": b"M"})

    def boot(hide):
        code = "ROOT = %r\nFLASH = %r\nHIDE = %r\n" % (str(root), str(flash), hide) + BOOT
        rc, out, err = run_micropython(["-c", code], sim=False, timeout_s=60, heapsize="128K")
        assert rc == 0, out + err
        return json.loads(out.split("BOOT ", 1)[1].splitlines()[0])

    first, second = boot(False), boot(True)  # the second must not use the validator at all
    assert (first["hits"], second["hits"]) == (0, 1)
    assert not first["validator"] and not second["validator"]  # released / never loaded
    assert second["cfg"] == first["cfg"] and second["key"] == first["key"] == list(range(16))
    doc["interval_s"] = 240
    (flash / "config.json").write_text(json.dumps(doc))
    third = boot(False)
    assert third["hits"] == 0 and third["cfg"]["interval_s"] == 240
    manifest("a" * 64, {"app/main.mpy": b"M", "app/node.mpy": b"N"})  # the same firmware version
    assert boot(True)["hits"] == 1
    manifest("b" * 64, {"app/main.mpy": b"M"})  # a firmware update
    assert boot(False)["hits"] == 0
