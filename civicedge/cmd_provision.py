"""``civicedge provision plan|apply``: the IoT manager's command (docs/provisioning.md).

``plan`` prints what ``apply`` would create or update — each node's secrets and bundle, each
gateway's files, and with ``--chirpstack`` the site's application, device profiles, devices,
keys and gateways in ChirpStack — and changes nothing. ``apply`` does it. Neither ever prints
a key or a password.

Exit status: 0 done (or nothing to do); 1 failed part-way (run again: it resumes); 2 the
inventory or an argument is invalid; 3 ChirpStack refused the API token; 4 ChirpStack could
not be reached.
"""

import json
import pathlib
import sys
import uuid

from civicedge import inventory
from civicedge import provision as prov
from civicedge import provision_chirpstack as pcs


def register(sub):
    p = sub.add_parser("provision", help="make a site's keys, node bundles, gateway configs and ChirpStack "
                                         "devices from its inventory")
    psub = p.add_subparsers(dest="provision_command", metavar="PROVISION_COMMAND")
    for name, text in (("plan", "show what apply would create or update; change nothing"),
                       ("apply", "create or update what the inventory needs (idempotent, resumable)")):
        c = psub.add_parser(name, help=text)
        c.add_argument("--inventory", required=True, type=pathlib.Path,
                       help="the site inventory: TOML (hardware/inventory.example.toml) or CSV")
        c.add_argument("--out", type=pathlib.Path, help="the site directory (default: <inventory dir>/<site id>)")
        c.add_argument("--chirpstack", metavar="URL", help="ChirpStack v4's API, e.g. http://chirpstack:8080 "
                                                           "(https:// for TLS); leave out to skip ChirpStack")
        c.add_argument("--token-file", type=pathlib.Path, help="file holding a ChirpStack API token (mode 0600)")
        c.add_argument("--tenant-id", help="the ChirpStack tenant's id (a UUID: ChirpStack > Tenants)")
        c.add_argument("--codec", type=pathlib.Path, default=prov.DEFAULT_CODEC,
                       help="the JavaScript payload codec for the device profiles (default: %(default)s)")
        c.add_argument("--timeout", type=float, default=30.0, help="seconds per ChirpStack call (default 30)")
        c.add_argument("--all", action="store_true", help="list unchanged objects too")
        c.add_argument("--json", action="store_true", help="print the changes as JSON")
        c.set_defaults(func=_run, apply=name == "apply")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _fail(message, code):
    print("civicedge provision: %s" % message, file=sys.stderr)
    return code


def _target(args):
    given = [args.chirpstack, args.token_file, args.tenant_id]
    if not any(given):
        return None
    if not all(given):
        raise pcs.ChirpStackError("--chirpstack, --token-file and --tenant-id go together", prov.EXIT_INVALID)
    pcs.parse_url(args.chirpstack)
    try:
        uuid.UUID(args.tenant_id)
    except ValueError:
        raise pcs.ChirpStackError("--tenant-id %r: give the tenant's id, a UUID (ChirpStack: Tenants)" % args.tenant_id,
                                  prov.EXIT_INVALID)
    return prov.ChirpStackTarget(args.chirpstack, pcs.read_token(args.token_file), args.tenant_id, args.codec,
                                 args.timeout)


def _print(plan, args, applied):
    changes = plan.changes
    counts = plan.counts()
    if args.json:
        print(json.dumps({"site": plan.site.inv.site_id, "site_dir": str(plan.site.dir), "applied": applied,
                          "counts": counts, "changes": [c.__dict__ for c in changes]}, indent=1))
        return
    print("site %s (%s) -> %s" % (plan.site.inv.site_id, plan.site.inv.file, plan.site.dir))
    for c in changes:
        if c.action != "unchanged" or args.all:
            detail = "  (%s)" % c.detail if c.detail else ""
            print("  %-10s %-10s %-14s %s%s" % (c.action, c.area, c.kind, c.name, detail))
    if plan.site.state.note:
        print("  note: " + plan.site.state.note)
    verb = "applied" if applied else "plan"
    if not counts["create"] and not counts["update"]:
        print("%s: nothing to do; %d unchanged" % (verb, counts["unchanged"]))
    else:
        print("%s: %d %s, %d %s, %d unchanged" % (verb, counts["create"], "created" if applied else "to create",
                                                  counts["update"], "updated" if applied else "to update",
                                                  counts["unchanged"]))


def _run(args):
    progress = (lambda msg: print("  " + msg, file=sys.stderr, flush=True))
    plan = None
    try:
        inv = prov.load_inventory(args.inventory)
        out = args.out or pathlib.Path(inv.file).resolve().parent / inv.site_id
        plan = prov.plan(inv, out, _target(args), progress=progress)
        if args.apply:
            prov.apply(plan, progress=progress)
        _print(plan, args, args.apply)
        return 0
    except inventory.InventoryError as e:
        for problem in e.problems:
            print(str(problem), file=sys.stderr)
        return _fail("%d problem(s) in the inventory; nothing was changed" % len(e.problems), prov.EXIT_INVALID)
    except (prov.ProvisionError, pcs.ChirpStackError) as e:
        return _fail(e, e.exit_code)
    except OSError as e:
        return _fail("%s: %s" % (getattr(e, "filename", None) or "file", e.strerror or e), 1)
    finally:
        if plan is not None and plan.chirp:
            plan.chirp[0].close()
