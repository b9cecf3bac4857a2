"""``civicedge firmware``: build a node's flash tree, check a node configuration, list the
boards and profiles, and re-render the wiring tables, BOMs and example configuration.

``civicedge firmware build --board B --profile P --device-id ID --out DIR [--link L]`` is
the field engineer's command; ``civicedge.firmware_build`` does the work (docs/hardware.md).
"""

import json
import pathlib
import sys

from civicedge import firmware_build as fb


def register(sub):
    fw = sub.add_parser("firmware", help="build node firmware + config for a board and profile; hardware data")
    fwsub = fw.add_subparsers(dest="firmware_command", metavar="FIRMWARE_COMMAND")

    b = fwsub.add_parser("build", help="compile firmware/, drivers/, protocol/ to .mpy and write config.json "
                                       "and manifest.json for one node")
    b.add_argument("--board", required=True, help="hardware/boards/<BOARD>.toml (%s)" % ", ".join(fb.names("boards")))
    b.add_argument("--profile", required=True,
                   help="hardware/profiles/<PROFILE>.toml (%s)" % ", ".join(fb.names("profiles")))
    b.add_argument("--device-id", required=True, help="the node's id from the site inventory, e.g. sch1-rm12-co2")
    b.add_argument("--out", required=True, type=pathlib.Path, help="output directory: the flash's root")
    b.add_argument("--link", choices=("serial", "mqtt", "lorawan"), help="default: the profile's")
    b.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="set one config field (JSON value or text), e.g. sensors.sonar.empty_cm=118, "
                        "link.mqtt.host=gw1.local, link.wifi.ssid=school; repeatable")
    b.add_argument("--overlay", type=pathlib.Path, help="TOML/JSON file merged onto the config (site settings)")
    b.add_argument("--calibration", type=pathlib.Path,
                   help="the NO2-B43F's calibration sheet (TOML/JSON, drivers/no2b43f.py field names)")
    b.add_argument("--march", choices=("xtensawin",),
                   help="native-code architecture for mpy-cross (default: portable bytecode, which the "
                        "ESP32 and the simulator both run)")
    b.set_defaults(func=_build)

    c = fwsub.add_parser("check", help="validate a node's config.json (and secrets.json) as the node will")
    c.add_argument("config", type=pathlib.Path)
    c.add_argument("--secrets", type=pathlib.Path)
    c.set_defaults(func=_check)

    ls = fwsub.add_parser("list", help="the boards and profiles in hardware/")
    ls.set_defaults(func=_list)

    r = fwsub.add_parser("render", help="regenerate hardware/wiring/*.md, hardware/bom/*.csv and "
                                        "firmware/config.example.json from the TOML data")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    r.set_defaults(func=_render)
    fw.set_defaults(func=lambda args: (fw.print_help(), 2)[1])


def _fail(message):
    print("civicedge firmware: %s" % message, file=sys.stderr)
    return 1


def _build(args):
    ConfigError = fb.config_module().ConfigError
    try:
        manifest = fb.build(args.board, args.profile, args.device_id, args.out, link=args.link, sets=args.set,
                            overlay=args.overlay, calibration=args.calibration, march=args.march,
                            progress=lambda msg: print("  " + msg, file=sys.stderr))
    except (fb.BuildError, ConfigError) as e:
        return _fail(e)
    print(json.dumps({"out": str(args.out), "firmware_version": manifest["firmware_version"],
                      "config_sha256": manifest["config_sha256"], "files": len(manifest["files"])}))
    return 0


def _check(args):
    mod = fb.config_module()
    try:
        cfg = mod.load_config(str(args.config))
        if args.secrets:
            mod.load_secrets(str(args.secrets), cfg)
    except mod.ConfigError as e:
        return _fail(e)
    print("%s: ok (%s, %s link, %d sensors)" % (args.config, cfg["device_id"], cfg["link"]["type"],
                                                len(cfg["sensors"])))
    return 0


def _list(args):
    for name in fb.names("boards"):
        board = fb.load_board(name)["board"]
        print("board    %-26s %s (links: %s)" % (name, board["title"], ", ".join(board["links"])))
    for name in fb.names("profiles"):
        prof = fb.load_profile(name)["profile"]
        print("profile  %-26s %s (board %s, link %s)" % (name, prof["title"], prof["board"], prof["link"]))
    return 0


def _render(args):
    try:
        files = fb.render_all()
    except fb.BuildError as e:
        return _fail(e)
    stale = [rel for rel, text in files.items()
             if not (fb.REPO / rel).exists() or (fb.REPO / rel).read_text() != text]
    if args.check:
        for rel in stale:
            print("out of date: %s" % rel, file=sys.stderr)
        return 1 if stale else 0
    for rel in stale:
        path = fb.REPO / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[rel])
        print("wrote %s" % rel, file=sys.stderr)
    print("%d files, %d rewritten" % (len(files), len(stale)))
    return 0
