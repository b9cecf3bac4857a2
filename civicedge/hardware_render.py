"""The hardware data and what is rendered from it (used by ``civicedge.firmware_build``).

``hardware/boards/*.toml`` and ``hardware/profiles/*.toml``: ``read_data``, ``merge`` (a
board's ``extends`` chain; ``bom``/``wiring`` lists appended), ``names``, ``load_board``,
``load_profile`` and ``check_profile`` (the keys the build and the renderer need, alarm
rules). Rendering, pure: ``render_wiring`` (a profile's wiring document in Markdown, pins
resolved through ``used_pins`` / ``resolve``), ``render_bom`` (its bill of materials as CSV,
``bom_rows``). ``BuildError`` is the one error of both modules. ``civicedge.firmware_build``
re-exports all of these and holds ``render_all`` (it needs the node configuration).
"""

import copy
import csv
import io
import json
import pathlib
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
HARDWARE = REPO / "hardware"
PRICE_DATE = "2026-11"
APPENDED_LISTS = ("bom", "wiring")  # extends: these lists are appended, other values replaced
# Alarm rule kinds (data for the gateway's rules engine) and the keys each needs.
ALARM_RULES = {
    "above_for": ("threshold", "duration_s"), "mean_above": ("threshold", "window"),
    "max_below": ("threshold", "window"), "min_at_or_above": ("threshold", "window"),
    "time_in_band": ("lo", "hi", "window"), "at_or_above": ("threshold",), "rise": ("delta", "within_s"),
}
ALARM_WINDOWS = ("hour", "day", "year")
_PROFILE_KEYS = ("id", "title", "board", "link", "links", "interval_s", "mean_period_s",
                 "status_every_n_cycles", "watchdog_ms", "log_max_bytes", "example_device_id")


class BuildError(Exception):
    """A build that cannot go on; the message says what to do."""


# -- hardware data -------------------------------------------------------------------------------
def read_data(path):
    """A TOML or JSON file as a dict; ``BuildError`` naming the file if it does not parse."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return tomllib.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BuildError("%s: %s" % (path, e))


def merge(base, over):
    """``over`` deep-merged onto a copy of ``base`` (``bom``/``wiring`` lists appended)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key in APPENDED_LISTS and isinstance(out.get(key), list):
            out[key] = out[key] + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def names(kind, hardware=HARDWARE):
    """The boards or profiles (``kind``) there are files for, sorted."""
    return sorted(p.stem for p in (pathlib.Path(hardware) / kind).glob("*.toml"))


def load_board(name, hardware=HARDWARE, _seen=()):
    """The board ``name`` with its ``extends`` chain merged in."""
    path = pathlib.Path(hardware) / "boards" / (name + ".toml")
    if not path.exists():
        raise BuildError("no board %r; boards: %s" % (name, ", ".join(names("boards", hardware))))
    data = read_data(path)
    parent = data.pop("extends", None)
    if parent is not None:
        if parent in _seen or len(_seen) > 4:
            raise BuildError("%s: extends loops through %r" % (path, parent))
        data = merge(load_board(parent, hardware, _seen + (name,)), data)
    if data.get("board", {}).get("id") != name:
        raise BuildError("%s: [board] id must be %r (the file name)" % (path, name))
    return data


def load_profile(name, hardware=HARDWARE):
    """The profile ``name``, checked for the keys the build and the renderer use."""
    path = pathlib.Path(hardware) / "profiles" / (name + ".toml")
    if not path.exists():
        raise BuildError("no profile %r; profiles: %s" % (name, ", ".join(names("profiles", hardware))))
    data = read_data(path)
    check_profile(data, str(path))
    return data


def check_profile(data, source):
    """``BuildError`` naming the key if the profile lacks one or an alarm is malformed."""
    prof = data.get("profile", {})
    for key in _PROFILE_KEYS:
        if key not in prof:
            raise BuildError("%s: [profile] %s is missing" % (source, key))
    if prof["link"] not in prof["links"]:
        raise BuildError("%s: [profile] link %r is not in links" % (source, prof["link"]))
    for key in ("source", "sleep", "rail_gated", "battery_monitor"):
        if key not in data.get("power", {}):
            raise BuildError("%s: [power] %s is missing" % (source, key))
    for i, alarm in enumerate(data.get("alarms", [])):
        where = "%s: alarms[%d]" % (source, i)
        need = ALARM_RULES.get(alarm.get("rule"))
        if need is None:
            raise BuildError("%s.rule: %r is not one of %s" % (where, alarm.get("rule"), ", ".join(ALARM_RULES)))
        for key in ("id", "quantity", "severity", "basis") + need:
            if key not in alarm:
                raise BuildError("%s: %s is missing (rule %s needs %s)" % (where, key, alarm["rule"], ", ".join(need)))
        if "window" in alarm and alarm["window"] not in ALARM_WINDOWS:
            raise BuildError("%s.window: %r is not one of %s" % (where, alarm["window"], ", ".join(ALARM_WINDOWS)))
    for i, row in enumerate(data.get("bom", [])):
        for key in ("ref", "qty", "description", "manufacturer", "mpn", "unit_gbp"):
            if key not in row:
                raise BuildError("%s: bom[%d].%s is missing" % (source, i, key))


# -- wiring tables and bills of materials --------------------------------------------------------
def used_pins(cfg):
    """[(config field, GPIO)] of every pin the configuration drives or reads."""
    pins = []
    for i, bus in enumerate(cfg["i2c"]):
        pins += [("i2c[%d].sda_pin" % i, bus["sda_pin"]), ("i2c[%d].scl_pin" % i, bus["scl_pin"])]
    for sec, key in (("rail", "pin"), ("battery", "adc_pin"), ("status_led", "pin")):
        if cfg.get(sec):
            pins.append(("%s.%s" % (sec, key), cfg[sec][key]))
    link = cfg["link"]
    for sec, key in (("uart", "tx_pin"), ("uart", "rx_pin"), ("modem", "reset_pin")):
        if link.get(sec) and link[sec].get(key) is not None:
            pins.append(("link.%s.%s" % (sec, key), link[sec][key]))
    return pins


def resolve(cfg, target):
    """A wiring row's ``to``: ``@path`` becomes "GPIOn (`path`)", anything else stays."""
    if not target.startswith("@"):
        return target
    pins = dict(used_pins(cfg))
    if target[1:] not in pins:
        raise BuildError("wiring: %s is not a pin of this configuration (pins: %s)" % (target, ", ".join(pins)))
    return "GPIO%d (`%s`)" % (pins[target[1:]], target[1:])


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bom_rows(profile, board):
    """The board's BOM lines then the profile's."""
    return board.get("bom", []) + profile.get("bom", [])


def render_bom(profile, board):
    """The profile's bill of materials as CSV text (indicative GBP prices, dated)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["ref", "qty", "description", "manufacturer", "mpn", "unit_gbp", "line_gbp", "price_date", "note"])
    for r in bom_rows(profile, board):
        w.writerow([r["ref"], r["qty"], r["description"], r["manufacturer"], r["mpn"], "%.2f" % r["unit_gbp"],
                    "%.2f" % (r["qty"] * r["unit_gbp"]), PRICE_DATE, r.get("note", "")])
    return out.getvalue()


def render_wiring(profile, board, cfg):
    """The profile's wiring document (Markdown) for its reference board and default link."""
    prof, power, link = profile["profile"], profile["power"], cfg["link"]["type"]
    rows = [r for r in board.get("wiring", []) + profile.get("wiring", []) if r.get("link", link) == link]
    chip = board["chip"]
    pin_rows = []
    for field, gpio in used_pins(cfg):
        flags = [w for w, key in (("input-only", "input_only"), ("strapping pin", "strapping")) if gpio in chip[key]]
        pin_rows.append((field, gpio, "yes" if gpio in chip["rtc"] else "no", ", ".join(flags)))
    total = sum(r["qty"] * r["unit_gbp"] for r in bom_rows(profile, board))
    notes = profile.get("wiring_notes", {})
    parts = [
        "<!-- Generated by `civicedge firmware render` from hardware/profiles/%s.toml and hardware/boards/%s.toml:"
        " edit those, then re-render. -->" % (prof["id"], board["board"]["id"]),
        "# Wiring: %s - %s" % (prof["id"], prof["title"]), "",
        "Reference board: **%s** (%s). Link: %s. Power: %s, %s sleep, sensor rail %s." % (
            board["board"]["id"], board["board"]["title"], link, power["source"], power["sleep"],
            "switched (settle %d ms)" % cfg["rail"]["settle_ms"] if cfg["rail"] else "always on"),
        "Every interval %d s; `config.json` fields are named in backticks." % prof["interval_s"], "",
        "## Connections", "", _md_table(("from", "to", "note"),
                                        [(r["from"], resolve(cfg, r["to"]), r.get("note", "")) for r in rows]), "",
        "## Board pins used", "", _md_table(("config field", "GPIO", "RTC (deep-sleep wake/hold)", "note"), pin_rows), "",
        "## I2C parts", "", _md_table(("sensor", "part", "bus", "address"),
                                      [(s["name"], s["part"], s.get("bus", 0), "0x%02x" % s["address"])
                                       for s in cfg["sensors"]]), "",
    ]
    for key, title in (("pull_ups", "Pull-ups"), ("power", "Power and gating"), ("decoupling", "Decoupling"),
                       ("placement", "Placement")):
        if key in notes:
            parts += ["## " + title, "", notes[key], ""]
    board_notes = [(sec, board[sec]["note"]) for sec in ("rail", "battery", "uart", "modem")
                   if sec in board and "note" in board[sec] and (sec != "rail" or cfg["rail"])
                   and (sec != "battery" or cfg["battery"]) and (sec != "modem" or link == "lorawan")]
    if board_notes:
        parts += ["## Board notes", ""] + ["- **%s**: %s" % (sec, text) for sec, text in board_notes] + [""]
    parts += ["## Bill of materials", "",
              "`hardware/bom/%s.csv`: %d lines, indicative total GBP %.2f (GBP, ex VAT, one-off quantities, "
              "dated %s; estimates, not quotes: check a distributor before ordering)." % (
                  prof["id"], len(bom_rows(profile, board)), total, PRICE_DATE), ""]
    return "\n".join(parts)

