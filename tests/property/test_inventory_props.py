"""Hypothesis properties of the inventory reader: arbitrary bytes, arbitrary TOML documents
(random keys and values of every type, and the example with one value replaced) and arbitrary
CSV rows raise only ``InventoryError``; and the line an error names is the line of the key."""

import copy
import csv
import io
import json
import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicedge import firmware_build as fb
from civicedge import inventory as inv
from civicedge.inventory import InventoryError

EXAMPLE = tomllib.loads((fb.REPO / "hardware" / "inventory.example.toml").read_text())
KEYS = ["inventory_version", "site", "gateways", "devices", "id", "profile", "board", "link", "gateway",
        "location", "room", "street", "lat", "lon", "dev_eui", "attributes", "settings", "calibration",
        "lorawan_gateway_eui", "host", "wifi_ssid", "serial_ports", "upstream_host", "upstream_port",
        "timezone", "lorawan_join_eui", "devices_csv", "name"]
COLUMNS = ["kind", "id", "name", "profile", "board", "link", "gateway", "room", "street", "lat", "lon", "dev_eui",
           "lorawan_gateway_eui", "host", "wifi_ssid", "serial_ports", "upstream_host", "upstream_port",
           "attr:outlet", "set:sensors.sonar.empty_cm", "set:x", "colour"]
CELLS = ["site", "gateway", "device", "sch1", "gw1", "d1", "classroom-co2", "legionella-outlet", "bin-level",
         "esp32-devkitc", "esp32-devkitc-rak3272s", "serial", "mqtt", "lorawan", "Room 1", "51.5", "-0.1", "nan",
         "70b3d57ed0061a2c", "/dev/ttyUSB0", "mqtt.example.org", "8883", "hot", "118", "", "=1+1"]
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.text(max_size=30), st.integers(min_value=-2**70, max_value=2**70), st.booleans(),
                    st.integers(min_value=10**300, max_value=10**310),  # no float holds them
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["gw1", "d1", "sch1", "mqtt",
                                                                                    "70b3d57ed0061a2c"]))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=5)), max_leaves=12)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):  # a JSON string is a TOML basic string once DEL is escaped too
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join("%s = %s" % (toml_value(k), toml_value(x)) for k, x in v.items()) + "}"


def toml_document(data):
    return "".join("%s = %s\n" % (toml_value(k), toml_value(v)) for k, v in data.items())


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("inventory-props")


def only_inventory_errors(path, loader=inv.load):
    try:
        site = loader(path)
    except InventoryError as e:
        assert e.problems and all(isinstance(p, InventoryError) for p in e.problems)
        assert all(str(p) for p in e.problems)
        return None
    assert isinstance(site, inv.Inventory)
    return site


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_inventory_errors(tmp, data):
    path = tmp / "bytes.toml"
    path.write_bytes(data)
    only_inventory_errors(path)
    path = tmp / "bytes.csv"
    path.write_bytes(data)
    only_inventory_errors(path, inv.import_csv)


tables = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), scalars | values, max_size=6)
documents = st.one_of(st.dictionaries(keys, values, max_size=6),
                      st.fixed_dictionaries({"site": tables, "gateways": st.lists(tables, max_size=2),
                                             "devices": st.lists(tables, max_size=3)}))


@SETTINGS
@given(documents)
def test_arbitrary_toml_documents_raise_only_inventory_errors(tmp, data):
    path = tmp / "random.toml"
    path.write_text(toml_document(data))
    only_inventory_errors(path)


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


EXAMPLE_PATHS = [p for p in _paths(EXAMPLE) if p]


@SETTINGS
@given(st.sampled_from(EXAMPLE_PATHS), values)
def test_the_example_with_any_value_replaced_raises_only_inventory_errors(tmp, path, value):
    data = copy.deepcopy(EXAMPLE)
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    (tmp / "sch1-wifi.password").write_text("x")
    doc = tmp / "mutated.toml"
    doc.write_text(toml_document(data))
    only_inventory_errors(doc)


@SETTINGS
@given(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=10, unique=True),
       st.lists(st.lists(st.one_of(st.sampled_from(CELLS), st.text(max_size=20)), max_size=12), max_size=8))
def test_arbitrary_csv_rows_raise_only_inventory_errors(tmp, header, rows):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp / "rows.csv"
    path.write_text(out.getvalue())
    only_inventory_errors(path, inv.import_csv)


GOOD = '[[devices]]\nid = "d%d"\nprofile = "legionella-outlet"\nlocation = { room = "R%d" }\ndev_eui = "%s"\n'


@SETTINGS
@given(st.integers(min_value=1, max_value=6), st.data())
def test_the_line_named_is_the_line_of_the_bad_key(tmp, n, data):
    bad = data.draw(st.integers(min_value=0, max_value=n - 1))
    padding = st.sampled_from(["", "\n", "# a comment with dev_eui = \"x\"\n", "\n\n"])
    lines = ['inventory_version = 1', '[site]', 'id = "s1"', '[[gateways]]', 'id = "gw1"',
             'location = { street = "High St" }', 'upstream_host = "mqtt.example.org"']
    text = "\n".join(lines) + "\n"
    for i in range(n):
        block = GOOD % (i, i, "70b3d57ed00000%02x" % i if i != bad else "70b3d57ed0000g00")
        text += data.draw(padding) + "".join(line + "\n" + data.draw(padding) for line in block.splitlines())
    path = tmp / "lines.toml"
    path.write_text(text)
    with pytest.raises(InventoryError) as e:
        inv.load(path)
    assert e.value.field == "devices[%d].dev_eui" % bad
    assert text.splitlines()[e.value.line - 1] == 'dev_eui = "70b3d57ed0000g00"'
