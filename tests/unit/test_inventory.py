"""The site inventory: the examples load (TOML and CSV alike), every rule's error names the file,
the line and the field, all problems are reported at once, and hostile files are refused
with a message."""

import os

import pytest

from civicedge import firmware_build as fb
from civicedge import inventory as inv
from civicedge.inventory import InventoryError

HEAD = """inventory_version = 1
[site]
id = "sch1"

[[gateways]]
id = "gw1"
location = { room = "Office" }
serial_ports = ["/dev/ttyUSB0"]
upstream_host = "mqtt.example.org"
"""
DEVICE = """
[[devices]]
id = "%s"
profile = "legionella-outlet"
location = { room = "Kitchen" }
dev_eui = "%s"
"""


def write(tmp_path, text, name="inventory.toml", mode="w"):
    path = tmp_path / name
    if mode == "w":
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def problems(path, loader=inv.load):
    with pytest.raises(InventoryError) as e:
        loader(path)
    return [str(p) for p in e.value.problems]


def one(tmp_path, body, head=HEAD):
    """The only problem of an inventory: HEAD + ``body``."""
    found = problems(write(tmp_path, head + body))
    assert len(found) == 1, found
    return found[0]


def test_the_example_loads_with_its_defaults():
    site = inv.load(fb.REPO / "hardware" / "inventory.example.toml")
    assert site.site_id == "sch1" and site.timezone == "Europe/London" and site.join_eui == "0" * 16
    gw = site.gateway("gw1")
    assert gw.lorawan_gateway_eui == "0016c001f153a14c" and gw.upstream_username == "sch1-gw1"
    assert gw.upstream_port == 8883 and gw.wifi_password_file == str(fb.REPO / "hardware" / "sch1-wifi.password")
    rm12, rm14, hot, bin1 = site.devices
    assert (rm12.board, rm12.link, rm12.gateway, rm12.line) == ("esp32-devkitc", "serial", "gw1", 40)
    assert hot.board == "esp32-devkitc-rak3272s" and hot.link == "lorawan" and hot.attributes == {"outlet": "hot"}
    assert hot.location == inv.Location(room="Kitchen", lat=51.50745, lon=-0.1279)
    assert bin1.location.describe() == "Playground, by the kitchen door"
    assert bin1.settings == (("sensors.sonar.empty_cm", 118.0),)
    assert site.devices_of("gw1") == site.devices and site.device("sch1-kit-hot1") is hot
    with pytest.raises(KeyError):
        site.device("nope")


def test_the_csv_example_is_the_same_site():
    def plain(site):
        return [{k: v for k, v in vars(x).items() if k != "line"} for x in site.gateways + site.devices]

    csv_site = inv.import_csv(fb.REPO / "hardware" / "inventory.example.csv")
    toml_site = inv.load(fb.REPO / "hardware" / "inventory.example.toml")
    assert plain(csv_site) == plain(toml_site) and csv_site.site_name == toml_site.site_name
    assert [d.line for d in csv_site.devices] == [5, 6, 7, 8]


@pytest.mark.parametrize("body, expected", [
    (DEVICE % ("d1", "xyz"), "line 15: devices[0].dev_eui: 'xyz' must be 16 hex digits (the modem's DevEUI)"),
    (DEVICE % ("D1", "70b3d57ed0061a2c"), "line 12: devices[0].id: 'D1' must be 1-32 of a-z 0-9 -"),
    (DEVICE % ("d1", "0000000000000000"), "line 15: devices[0].dev_eui: 0000000000000000 is a placeholder"),
    (DEVICE % ("d1", "70b3d57ed0061a2c") + 'colour = "red"\n', "line 16: devices[0].colour: unknown key (a typo?)"),
    (DEVICE % ("d1", "70b3d57ed0061a2c") + 'gateway = "gw9"\n', "line 16: devices[0].gateway: 'gw9' is not a gateway"),
    (DEVICE % ("d1", "70b3d57ed0061a2c") + 'board = "esp32-devkitc"\n',
     "line 16: devices[0].board: board esp32-devkitc supports links serial, mqtt, not lorawan; a lorawan device needs "
     "a LoRa board: esp32-devkitc-rak3272s, esp32-devkitc-wio-e5"),
    ('\n[[devices]]\nid = "d1"\nprofile = "legionella-outlet"\nlocation = { room = "K" }\n',
     "line 11: devices[0].dev_eui: missing: a lorawan device needs its modem's DevEUI"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "K" }\ndev_eui = "70b3d57ed0061a2c"\n',
     "line 15: devices[0].dev_eui: only a lorawan device has a DevEUI"),
    ('\n[[devices]]\nid = "d1"\nprofile = "co2"\nlocation = { room = "K" }\n',
     "line 13: devices[0].profile: no profile 'co2'; profiles: bin-level, classroom-co2"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\n', "line 11: devices[0].location: must be a table"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { lat = 51.5, lon = 0.1 }\n',
     "line 14: devices[0].location: give a room or a street"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation.room = "K"\nlocation.lat = 91\n'
     'location.lon = 0\n', "line 15: devices[0].location.lat: 91 must be a number -90..90"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\n[devices.location]\nroom = "K"\nlat = nan\nlon = 1\n',
     "line 16: devices[0].location.lat: nan must be a number -90..90"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "=HYPERLINK(\\"x\\")" }\n',
     "line 14: devices[0].location.room: starts with '=', which a spreadsheet runs as a formula"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "Room\\u202e21" }\n',
     "line 14: devices[0].location.room: holds a control or invisible character ('\\u202e')"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "K\\nL" }\n',
     "devices[0].location.room: holds a control or invisible character ('\\n')"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "K" }\nattributes = { Outlet = "h" }\n',
     "line 15: devices[0].attributes.Outlet: the name must be 1-32 of a-z 0-9 _"),
    ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "K" }\nsettings = { x = [1] }\n',
     "line 15: devices[0].settings.x: must be a number, text or true/false"),
])
def test_each_rule_names_the_line_and_the_field(tmp_path, body, expected):
    found = one(tmp_path, body)
    assert found.startswith(str(tmp_path / "inventory.toml") + ": ")
    assert expected in found


def test_site_and_gateway_rules(tmp_path):
    assert "line 3: site.id: 'School 1' must be" in one(tmp_path, "", HEAD.replace('"sch1"', '"School 1"'))
    assert "line 9: gateways[0].upstream_host: 'mqtt://x' must be a host name" in one(
        tmp_path, "", HEAD.replace('"mqtt.example.org"', '"mqtt://x"'))
    assert "line 5: gateways[0].upstream_host: missing" in one(tmp_path, "", HEAD.replace(
        'upstream_host = "mqtt.example.org"\n', ""))
    assert "gateways: missing: list the site's gateways" in one(tmp_path, "",
                                                                'inventory_version = 1\n[site]\nid = "s"\n')
    assert "line 4: site.timezone: 'Mars/Olympus' is not a time zone" in one(
        tmp_path, "", HEAD.replace('id = "sch1"', 'id = "sch1"\ntimezone = "Mars/Olympus"'))
    mqtt = '\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlink = "mqtt"\nlocation = { room = "K" }\n'
    found = problems(write(tmp_path, HEAD + mqtt))
    assert [p.split(": ")[2] for p in found] == ["gateways[0].host", "gateways[0].wifi_ssid",
                                                  "gateways[0].wifi_password_file"]
    serial = '\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = "K" }\n'
    assert "line 5: gateways[0].serial_ports: missing: gateway gw1 serves serial devices" in one(
        tmp_path, serial, HEAD.replace('serial_ports = ["/dev/ttyUSB0"]\n', ""))


def test_duplicates_and_all_problems_at_once(tmp_path):
    body = DEVICE % ("d1", "70b3d57ed0061a2c") + DEVICE % ("d1", "70B3D57ED0061A2C") + DEVICE % ("gw1", "xx")
    found = problems(write(tmp_path, HEAD + body))
    assert any("line 18: devices[1].id: 'd1' is already devices[0]" in p for p in found)
    assert any("line 21: devices[1].dev_eui: 70b3d57ed0061a2c is already devices[0]'s" in p for p in found)
    assert any("line 24: devices[2].id: 'gw1' is already gateways[0]" in p for p in found)
    assert any("line 27: devices[2].dev_eui: 'xx' must be" in p for p in found)


def test_the_line_finder_is_not_fooled_by_strings_and_arrays(tmp_path):
    head = HEAD.replace('serial_ports = ["/dev/ttyUSB0"]', 'serial_ports = [\n  "/dev/ttyUSB0",  # the [one]\n'
                                                           '  "/dev/ttyUSB1",\n]')
    body = ('\n[[devices]]\nid = "d1"\nprofile = "classroom-co2"\nlocation = { room = """K\n'
            'dev_eui = "not a key"\n""" }\nboard = "esp32-devkitc-rak3272s"\n')
    found = problems(write(tmp_path, head + body))
    assert [p.split(": ", 1)[1] for p in found] == [
        "line 17: devices[0].location.room: holds a control or invisible character ('\\n')",
        "line 20: devices[0].board: board esp32-devkitc-rak3272s supports links lorawan, mqtt, not serial"]


def test_a_devices_csv_adds_rows_and_its_errors_name_the_csv(tmp_path):
    (tmp_path / "more.csv").write_text("id,profile,room,dev_eui,attr:outlet\n"
                                       "d2,legionella-outlet,Kitchen,70b3d57ed0061a2d,cold\n"
                                       "d3,legionella-outlet,\"Store,\nback\",70b3d57ed0061a2e,\n"
                                       "\n"
                                       "d4,legionella-outlet,Hall,70b3d57ed0061a2,\n")
    text = HEAD.replace('id = "sch1"', 'id = "sch1"\ndevices_csv = "more.csv"') + DEVICE % ("d1", "70b3d57ed0061a2c")
    path = write(tmp_path, text)
    csv = str(tmp_path / "more.csv")
    assert problems(path) == [
        csv + ": line 3: devices[2].location.room (column room): holds a control or invisible character ('\\n')",
        csv + ": line 6: devices[3].dev_eui (column dev_eui): '70b3d57ed0061a2' must be 16 hex digits (the modem's "
              "DevEUI)"]
    (tmp_path / "more.csv").write_text("id,profile,room,dev_eui,attr:outlet\nd2,legionella-outlet,Kitchen,"
                                       "70b3d57ed0061a2d,cold\n")
    site = inv.load(path)
    assert [d.id for d in site.devices] == ["d1", "d2"] and site.devices[1].attributes == {"outlet": "cold"}


def test_csv_rules_name_the_line_and_column(tmp_path):
    head = "kind,id,profile,room,lat,lon,dev_eui,upstream_host,set:sensors.sonar.empty_cm\nsite,s1,,,,,,,\n" \
           "gateway,gw1,,Office,,,,mqtt.example.org,\n"
    csv = write(tmp_path, head + "device,d1,bin-level,Yard,north,1,70b3d57ed0061a2c,,118\n", "i.csv")
    assert problems(csv, inv.import_csv) == [
        str(csv) + ": line 4: devices[0].location.lat (column lat): 'north' must be a number -90..90"]
    csv = write(tmp_path, head + "device,d1,bin-level,Yard,,,70b3d57ed0061a2c,,118\n", "i.csv")
    assert inv.import_csv(csv).devices[0].settings == (("sensors.sonar.empty_cm", 118),)
    for text, expected in [
        ("kind,id,colour\n", "line 1: unknown column 'colour'"),
        ("id,profile\nd1,x\n", "line 1: no 'kind' column"),
        (head + "robot,r1,,,,,,,\n", "line 4: kind 'robot' must be site, gateway or device"),
        (head + "device,d1,bin-level,Yard,,,,,,,,\n", "line 4: has 12 cells; the header has 9"),
        (head + "gateway,gw2,bin-level,,,,,,\n", "line 4: column 'profile' does not apply to a gateway row"),
        (head.replace("site,s1,,,,,,,\n", ""), "site: missing: add a row with kind = site"),
        (head + "site,s2,,,,,,,\n", "line 4: site: a second site row"),
    ]:
        found = problems(write(tmp_path, text, "i.csv"), inv.import_csv)
        assert expected in found[0], (found, expected)


@pytest.mark.parametrize("data, expected", [
    (b"x" * (inv.MAX_BYTES + 1), "is larger than 4 MiB: not an inventory"),
    (b'inventory_version = 1\n[site]\nid = "a\x00b"\n', "line 3: holds a NUL byte"),
    ("inventory_version = 1\n".encode("utf-16"), "line 1: holds a NUL byte: a binary or UTF-16 file?"),
    (b'inventory_version = 1\n[site]\nid = "caf\xe9"\n', "line 3: is not UTF-8 text (byte 0xe9)"),
    (b'\xef\xbb\xbfinventory_version = 1\n', "not valid TOML"),
    (b'inventory_version = 1\n[site\n', "line 2: not valid TOML"),
    (b'inventory_version = 1\nsite = 5\ngateways = "x"\n', "site: must be a table"),
    (b'inventory_version = 2\n', "inventory_version: must be 1"),
    (b'x = ' + b'9' * 5000 + b'\n', "not valid TOML: Exceeds the limit (4300 digits)"),
    (b'inventory_version = 1\n[site]\nid = "s"\n[[gateways]]\nid = "g"\nupstream_host = "h"\n'
     b'location = { room = "r", lat = 1' + b'0' * 400 + b', lon = 0 }\n', "line 7: gateways[0].location.lat: 1000"),
])
def test_hostile_files_are_refused_with_a_message(tmp_path, data, expected):
    found = problems(write(tmp_path, data, mode="wb"))
    assert expected in found[0], found


def test_what_is_not_a_file_is_refused(tmp_path):
    assert "cannot read it (No such file or directory)" in problems(tmp_path / "missing.toml")[0]
    assert "is not a regular file" in problems(tmp_path)[0]
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert "is not a regular file" in problems(fifo)[0]  # and it does not hang waiting for a writer


def test_a_csv_may_start_with_a_byte_order_mark(tmp_path):
    text = open(fb.REPO / "hardware" / "inventory.example.csv", encoding="utf-8").read()
    path = write(tmp_path, "\ufeff" + text, "bom.csv")
    assert inv.import_csv(path).site_id == "sch1"
    assert "line 3: is not UTF-8 text" in problems(write(tmp_path, text.encode("utf-8").replace(
        b"Example", b"Ex\x92mple"), "bad.csv", "wb"), inv.import_csv)[0]
