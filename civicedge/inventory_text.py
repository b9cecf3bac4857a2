"""Reading inventory files: bytes to text (refusing huge, binary or non-UTF-8 files), the line
of each key in a TOML text (tomllib gives no positions), and CSV rows as the tables they stand
for. ``civicedge.inventory`` validates what these return.
"""

import codecs
import csv
import io
import json
import os
import re
import stat

MAX_BYTES = 4 * 2**20  # a 5000-device inventory is well under 1 MiB
MAX_ROWS = 5100


class InventoryError(ValueError):
    """An inventory problem: ``file``, ``line`` (int or None), ``field`` ("devices[3].dev_eui"
    or None), ``message``; ``problems`` lists every problem found (this one first)."""

    def __init__(self, file, line, field, message, column=None):
        ValueError.__init__(self, message)
        self.file, self.line, self.field, self.message, self.column = str(file), line, field, message, column
        self.problems = [self]

    def __str__(self):
        where = [self.file] + (["line %d" % self.line] if self.line else [])
        what = self.field + (" (column %s)" % self.column if self.column else "") if self.field else ""
        return "%s: %s%s" % (": ".join(where), what + ": " if what else "", self.message)


# -- reading files -------------------------------------------------------------------------------
def read_text(path, bom_ok):
    """The UTF-8 text of the regular file ``path`` (a leading BOM dropped if ``bom_ok``: spreadsheets
    write one); ``InventoryError`` for a file that is missing, not regular (a FIFO would block),
    larger than ``MAX_BYTES``, or holds a NUL byte or bytes that are not UTF-8 (with the line)."""
    path = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InventoryError(path, None, None, "cannot read it (%s)" % (e.strerror or e))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InventoryError(path, None, None, "is not a regular file")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise InventoryError(path, None, None, "cannot read it (%s)" % (e.strerror or e))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        raise InventoryError(path, None, None, "is larger than %d MiB: not an inventory" % (MAX_BYTES >> 20))
    if bom_ok and data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    if b"\x00" in data:
        raise InventoryError(path, data.count(b"\n", 0, data.index(b"\x00")) + 1, None,
                             "holds a NUL byte: a binary or UTF-16 file? Save it as UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InventoryError(path, data.count(b"\n", 0, e.start) + 1, None,
                             "is not UTF-8 text (byte 0x%02x); save it as UTF-8 (\"CSV UTF-8\" in a "
                             "spreadsheet)" % data[e.start])


# -- where each key is in a TOML text ------------------------------------------------------------
_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = _KEY + r"(?:[ \t]*\.[ \t]*" + _KEY + r")*"
_HEADER = re.compile(r"[ \t]*(\[\[?)[ \t]*(" + _DOTTED + r")[ \t]*\]")
_KEYLINE = re.compile(r"[ \t]*(" + _DOTTED + r")[ \t]*=")


def _key_parts(dotted):
    parts = []
    for k in re.findall(_KEY, dotted):
        if k[0] == '"':
            try:
                k = json.loads(k)
            except ValueError:
                k = k[1:-1]
        elif k[0] == "'":
            k = k[1:-1]
        parts.append(k)
    return parts


def _scan_value(s, state):
    """Carry (string delimiter or None, bracket depth) through ``s``; comments end it."""
    quote, depth = state
    i = 0
    while i < len(s):
        if quote:
            if quote in ('"', '"""') and s[i] == "\\":
                i += 2
                continue
            if s.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            i += 1
            continue
        for q in ('"""', "'''", '"', "'"):
            if s.startswith(q, i):
                quote = q
                i += len(q)
                break
        else:
            c = s[i]
            if c == "#":
                break
            depth += c in "[{"
            depth -= c in "]}"
            i += 1
    if quote in ('"', "'"):
        quote = None  # single-line strings end with the line (tomllib accepted the text)
    return quote, depth


def toml_lines(text):
    """{path tuple: first line} for each table and key of a TOML text tomllib accepted;
    array-of-tables entries are indexed: ("devices", 3, "dev_eui")."""
    lines, counts, current, state = {}, {}, (), (None, 0)
    for n, line in enumerate(text.splitlines(), 1):
        if state != (None, 0):
            state = _scan_value(line, state)
            continue
        m = _HEADER.match(line)
        if m:
            parts, resolved = _key_parts(m.group(2)), []
            for p in parts[:-1]:
                resolved.append(p)
                if tuple(resolved) in counts:
                    resolved.append(counts[tuple(resolved)])
            key = tuple(resolved) + (parts[-1],)
            if m.group(1) == "[[":
                counts[key] = counts.get(key, -1) + 1
                key += (counts[key],)
            elif key in counts:
                key += (counts[key],)
            current = key
            lines.setdefault(current, n)
            continue
        m = _KEYLINE.match(line)
        if m:
            path = current
            for p in _key_parts(m.group(1)):
                path += (p,)
                lines.setdefault(path, n)
            state = _scan_value(line[m.end():], (None, 0))
    return lines


def line_of(lines, path):
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def toml_error_line(e):
    m = re.search(r"line (\d+)", str(e))
    return int(m.group(1)) if m else None


# -- CSV ------------------------------------------------------------------------------------------
GATEWAY_KEYS = ("id", "location", "lorawan_gateway_eui", "host", "wifi_ssid", "wifi_password_file", "serial_ports",
                "upstream_host", "upstream_port", "upstream_ca_file", "upstream_username", "chirpstack_mqtt_host",
                "chirpstack_mqtt_ca_file", "secrets_dir")
DEVICE_KEYS = ("id", "profile", "board", "link", "gateway", "location", "dev_eui", "attributes", "settings",
               "calibration")
_LOCATION = ("room", "street", "lat", "lon")
_CSV_COLUMNS = {
    "site": ("id", "name", "timezone", "lorawan_join_eui"),
    "gateway": tuple(k for k in GATEWAY_KEYS if k != "location") + _LOCATION,
    "device": tuple(k for k in DEVICE_KEYS if k not in ("location", "attributes", "settings")) + _LOCATION,
}


def csv_column(path):
    """The CSV column a field path came from ("devices", 3, "location", "lat") -> "lat"."""
    rest = path[2:] if path and path[0] in ("devices", "gateways") else path[1:]
    if not rest:
        return None
    if rest[0] == "location" and len(rest) > 1:
        return rest[1]
    if rest[0] == "attributes" and len(rest) > 1:
        return "attr:%s" % rest[1]
    return None if rest[0] in ("location", "settings") else rest[0]


def _cell_value(column, cell):
    if column in ("lat", "lon"):
        try:
            return float(cell)
        except ValueError:
            return cell
    if column == "upstream_port":
        return int(cell) if cell.isdigit() and len(cell) < 7 else cell
    if column == "serial_ports":
        return [p.strip() for p in cell.split(";") if p.strip()]
    if column.startswith("set:"):
        try:
            v = json.loads(cell)
        except ValueError:
            return cell
        return v if isinstance(v, (bool, int, float, str)) else cell
    return cell


def csv_rows(path, devices_only=False):
    """[(file, line, kind, table)] from a CSV inventory, each row as the TOML table it stands
    for; ``devices_only``: [(file, line, table)] of device rows (no ``kind`` column needed)."""
    file = str(path)
    reader = csv.reader(io.StringIO(read_text(path, bom_ok=True), newline=""))
    out, start = [], 1
    try:
        header = [h.strip() if h.strip().startswith("set:") else h.strip().lower() for h in next(reader, [])]
        known = set(_CSV_COLUMNS["gateway"] + _CSV_COLUMNS["device"] + _CSV_COLUMNS["site"] + ("kind",))
        for h in header:
            if h not in known and not re.fullmatch(r"(attr|set):\S{1,128}", h):
                raise InventoryError(file, 1, None, "unknown column %r (a typo?); columns: kind, %s, attr:NAME, "
                                     "set:CONFIG.PATH" % (h, ", ".join(_CSV_COLUMNS["device"])))
        if len(set(header)) != len(header) or not header:
            raise InventoryError(file, 1, None, "the first row must be a header naming each column once")
        if "kind" not in header and not devices_only:
            raise InventoryError(file, 1, None, "no 'kind' column: say for each row whether it is the site, a "
                                 "gateway or a device")
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            cells = [c.strip() for c in cells]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) > len(header):
                raise InventoryError(file, line, None, "has %d cells; the header has %d" % (len(cells), len(header)))
            row = {h: c for h, c in zip(header, cells) if c}
            kind = row.pop("kind", "device").lower()
            if kind not in _CSV_COLUMNS or (devices_only and kind != "device"):
                raise InventoryError(file, line, None, "kind %r must be %s" % (
                    kind, "device" if devices_only else "site, gateway or device"))
            table = {}
            for column, cell in row.items():
                value = _cell_value(column, cell)
                if column.startswith(("attr:", "set:")) and kind == "device":
                    section, name = ("attributes", column[5:]) if column[0] == "a" else ("settings", column[4:])
                    table.setdefault(section, {})[name] = value
                elif column in _LOCATION and kind != "site":
                    table.setdefault("location", {})[column] = value
                elif column in _CSV_COLUMNS[kind]:
                    table[column] = value
                else:
                    raise InventoryError(file, line, None, "column %r does not apply to a %s row" % (column, kind))
            out.append((file, line, kind, table))
            if len(out) > MAX_ROWS:
                raise InventoryError(file, line, None, "too many rows: at most %d" % MAX_ROWS)
    except csv.Error as e:
        raise InventoryError(file, start, None, "not valid CSV: %s" % e)
    return [(f, line, t) for f, line, _, t in out] if devices_only else out
