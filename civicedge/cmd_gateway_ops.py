"""``civicedge gateway status|export|wipe``: looking after a gateway (docs/gateway-operations.md).

``status [--config PATH] [--json]``
    A readable summary for the IoT manager: whether the agent runs, the outbox's depth per
    lane and its oldest unsent row, drops and gap markers, the delivered history, each
    device's last input and backlog, live counters from the metrics endpoint, and notes on
    what needs attention. Reads the outbox read-only: works while the agent runs or not.
``export [--config PATH] [--from ISO] [--to ISO] [--format csv|senml] [--device ID] [--out FILE]``
    Delivered and unsent readings of [from, to) in time order, as CSV or SenML JSON (the
    council's open-data copy). Without ``--out``, to standard output; a summary goes to stderr.
``wipe [--config PATH] [--yes]``
    Decommissioning: removes the outbox database, the agent's state files and the secrets
    files the configuration names (overwritten, then unlinked). Refuses while the agent runs;
    asks for confirmation unless ``--yes``; prints what it removed.

Exit statuses (as every gateway command; 0-3 as ``civicedge.cmd_gateway``):

- 0: done
- 1: failed: the outbox cannot be read, the export cannot be written, or a file could not
  be removed (the message says which and what to do)
- 2: the configuration or the command line is invalid
- 4: ``wipe`` refused: the agent is running (stop it first)
- 5: ``wipe`` not confirmed: nothing was removed

The commands are added to ``civicedge gateway`` by ``civicedge.cmd_gateway`` from
``SUBCOMMANDS``; ``python -m civicedge.cmd_gateway_ops gateway status ...`` runs them alone.
"""

import argparse
import json
import sys
import time

from gateway import ops, ops_export

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_RUNNING, EXIT_ABORTED = 0, 1, 2, 4, 5


def _gateway_cmd():
    from civicedge import cmd_gateway  # here, not at the top: cmd_gateway imports this module
    return cmd_gateway


def _fail(message, status):
    print("civicedge gateway: %s" % message, file=sys.stderr)
    return status


# -- status --------------------------------------------------------------------------------------
def _status(args):
    cfg, status = _gateway_cmd().load_config(args)
    if cfg is None:
        return status
    try:
        st = ops.gather_status(cfg, time.time())
    except ops.OpsError as e:
        return _fail(e, EXIT_FAILED)
    sys.stdout.write(json.dumps(st, indent=2) + "\n" if args.json else ops.format_status(st))
    return EXIT_OK


def _add_status(sub):
    p = sub.add_parser("status", help="a readable summary: agent, outbox, drops, devices")
    _gateway_cmd().add_config_argument(p)
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    p.set_defaults(func=_status)


# -- export --------------------------------------------------------------------------------------
def _export(args):
    cfg, status = _gateway_cmd().load_config(args)
    if cfg is None:
        return status
    try:
        start = ops.parse_time(args.start, "--from") if args.start else 0.0
        end = ops.parse_time(args.end, "--to") if args.end else float("inf")
        if not start < end:
            raise ValueError("--from %s is not before --to %s" % (args.start, args.end))
    except ValueError as e:
        return _fail(e, EXIT_INVALID)
    if args.device and args.device not in {d.id for d in cfg.devices} | {cfg.gateway_id}:
        print("civicedge gateway: note: device %r is not in %s; exporting what is stored for "
              "it anyway" % (args.device, cfg.file), file=sys.stderr)
    try:
        db = ops.open_readonly(cfg.outbox.path)
        try:
            if args.out in (None, "-"):
                res = ops_export.export(db, sys.stdout, args.format, start, end, args.device)
                sys.stdout.flush()
            else:
                res = ops_export.export_to_file(db, args.out, args.format, start, end,
                                                args.device)
        finally:
            db.close()
    except ops.OpsError as e:
        return _fail(e, EXIT_FAILED)
    except BrokenPipeError:  # `... | head`: the reader had enough
        return EXIT_OK
    what = "values" if args.format == "csv" else "SenML records"
    print("civicedge gateway: exported %d records (%d %s, %d not yet delivered upstream) of "
          "%s .. %s%s to %s; %d left out (gateway events, no values, or not encodable)%s"
          % (res.records, res.values, what, res.unsent, ops.iso(start) if start else "the start",
             ops.iso(end) if end != float("inf") else "now",
             " for %s" % args.device if args.device else "", args.out or "standard output",
             res.skipped, "; %d stored records have no time at all (no clock was trusted) and "
             "are in no time range" % res.untimed if res.untimed else ""), file=sys.stderr)
    return EXIT_OK


def _add_export(sub):
    p = sub.add_parser("export", help="readings of a time range as CSV or SenML JSON (open data)")
    _gateway_cmd().add_config_argument(p)
    p.add_argument("--from", dest="start", metavar="ISO",
                   help="first time included, ISO-8601 (2026-01-05 or 2026-01-05T10:00:00Z; "
                        "no zone: UTC); default: the oldest stored")
    p.add_argument("--to", dest="end", metavar="ISO",
                   help="first time NOT included, ISO-8601; default: everything after --from")
    p.add_argument("--format", choices=ops_export.FORMATS, default="csv",
                   help="csv (one line per value) or senml (RFC 8428 JSON); default %(default)s")
    p.add_argument("--device", metavar="ID", help="one device only")
    p.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    p.set_defaults(func=_export)


# -- wipe ----------------------------------------------------------------------------------------
def _confirm(plan):
    if not sys.stdin.isatty():
        return False
    answer = input("Remove these %d files for good? Type 'wipe' to confirm: " % len(plan))
    return answer.strip() == "wipe"


def _wipe(args, confirm=_confirm):
    cfg, status = _gateway_cmd().load_config(args)
    if cfg is None:
        return status
    state = ops.agent_state(cfg)
    if state["running"]:
        return _fail("refusing to wipe: the agent is running (%s); stop it first: systemctl stop "
                     "civicedge-gateway" % "; ".join(state["evidence"]), EXIT_RUNNING)
    plan, odd = ops_export.wipe_plan(cfg)
    for path in odd:
        print("left in place: %s is not a regular file (check the configuration)" % path)
    if not plan:
        print("nothing to remove: no outbox, state or secrets files of %s exist" % cfg.file)
        return EXIT_OK
    print("wipe will remove (site %s, gateway %s):" % (cfg.site_id, cfg.gateway_id))
    for path, what in plan:
        print("  %-8s %s%s" % (what, path, " (overwritten first)" if what == "secret" else ""))
    if not args.yes and not confirm(plan):
        return _fail("not confirmed: nothing was removed (run in a terminal, or add --yes)",
                     EXIT_ABORTED)
    try:
        done, ok = ops_export.wipe(cfg, plan)
    except ops.AgentRunning as e:  # it started meanwhile: nothing was removed
        return _fail("refusing to wipe: %s" % e, EXIT_RUNNING)
    for path, what, note in done:
        print("  %-8s %s: %s" % (what, path, note))
    print("also: revoke this gateway's credentials where they were issued (its MQTT user on the "
          "council's broker, the device keys at provisioning); an SD card can keep old copies "
          "of overwritten blocks (wear levelling): destroy or fully erase it for certainty")
    if not ok:
        return _fail("some files were NOT removed (listed above): fix their permissions or run "
                     "as root, then wipe again", EXIT_FAILED)
    return EXIT_OK


def _add_wipe(sub):
    p = sub.add_parser("wipe", help="decommission: remove the outbox, state and secrets files")
    _gateway_cmd().add_config_argument(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_wipe)


SUBCOMMANDS = (_add_status, _add_export, _add_wipe)


def build_parser():
    """``civicedge gateway`` with only these commands (tests; ``python -m``)."""
    parser = argparse.ArgumentParser(prog="civicedge")
    gw = parser.add_subparsers(dest="command", metavar="COMMAND").add_parser("gateway")
    sub = gw.add_subparsers(dest="gateway_command", metavar="GATEWAY_COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) if getattr(args, "func", None) else EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
