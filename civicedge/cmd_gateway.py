"""``civicedge gateway``: the Raspberry Pi gateway agent's commands.

``civicedge gateway check [--config PATH] [--user NAME]`` validates the configuration
(``gateway.config``) and runs the security checks (``gateway.security``) without starting
anything: it prints each finding and exits non-zero if there is any (docs/gateway-setup.md).
``civicedge gateway run [--config PATH]`` runs the same checks (failing closed with the same
statuses), builds the agent (``gateway.app.build``) and runs it until SIGTERM or SIGINT,
logging one line per event to stderr, telling systemd READY=1 and serving the metrics on
loopback when ``[metrics]`` is enabled (docs/gateway-agent.md).

Exit statuses, shared by every gateway command so the systemd unit can tell a bad
configuration (no point restarting: ``RestartPreventExitStatus=2 3``) from a crash (1):

- 0: ok (``run``: stopped by SIGTERM/SIGINT after storing what was queued)
- 1: the agent could not start (outbox unreadable, a configured part missing) or crashed
- 2: the configuration is invalid (or the command line is: argparse also uses 2)
- 3: the configuration is insecure; the agent refuses to start

Adding a command (``status``, ``export``, ``wipe``): write ``_add_<name>(sub)``
that adds its parser (with ``add_config_argument``) and sets ``func``, and list it in
``SUBCOMMANDS``. ``load_config(args)`` gives the validated configuration or an exit status.
"""

import argparse
import pwd
import sys

from gateway import config, security

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INSECURE = 3


def add_config_argument(parser):
    parser.add_argument("--config", default=config.DEFAULT_PATH, metavar="PATH",
                        help="the gateway's TOML configuration (default %(default)s)")


def _fail(message, status):
    print("civicedge gateway: %s" % message, file=sys.stderr)
    return status


def load_config(args):
    """``(cfg, None)``, or ``(None, exit status)`` after printing the ``ConfigError``."""
    try:
        return config.load(args.config), None
    except config.ConfigError as e:
        return None, _fail("%s\n  (the configuration's keys: docs/gateway-setup.md; a complete example: "
                           "deploy/gateway.example.toml)" % e, EXIT_INVALID)


def _uid(user):
    if user is None:
        return None
    try:
        return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError("--user: no user %r on this machine" % user)


def summary(cfg):
    """One line describing a valid configuration (no secrets in it)."""
    s = cfg.sources
    parts = ["serial x%d" % len(s.serial)] if s.serial else []
    if s.site_broker:
        parts.append("site broker %s:%d" % (s.site_broker.host, s.site_broker.port))
    if s.chirpstack:
        parts.append("chirpstack %s:%d" % (s.chirpstack.mqtt.host, s.chirpstack.mqtt.port))
    if s.i2c:
        parts.append("i2c bus %d (%d sensor%s)" % (s.i2c.bus, len(s.i2c.sensors), "s" * (len(s.i2c.sensors) != 1)))
    if cfg.upstream_mqtt:
        m = cfg.upstream_mqtt.mqtt
        up = "MQTT %s:%d%s" % (m.host, m.port, " over TLS" if m.tls else " (plaintext, loopback)")
    else:
        up = "LoRaWAN modem %s" % cfg.upstream_lorawan.port
    metrics = "%s:%d" % (cfg.metrics.host, cfg.metrics.port) if cfg.metrics.enabled else "off"
    return "site %s, gateway %s; %d device%s; sources: %s; upstream: %s; metrics: %s" % (
        cfg.site_id, cfg.gateway_id, len(cfg.devices), "s" * (len(cfg.devices) != 1), ", ".join(parts), up, metrics)


def _check(args):
    cfg, status = load_config(args)
    if cfg is None:
        return status
    try:
        euid = _uid(args.user)
    except ValueError as e:
        return _fail(e, EXIT_INVALID)
    findings = security.check(cfg, security.gather(cfg, euid))
    for f in findings:
        print("%s: %s" % (cfg.file, f))
    if findings:
        return _fail("%s: %d problem%s; the gateway refuses to start until %s fixed"
                     % (cfg.file, len(findings), "s" if len(findings) > 1 else "",
                        "they are" if len(findings) > 1 else "it is"), EXIT_INSECURE)
    print("%s: ok: %s" % (cfg.file, summary(cfg)))
    return EXIT_OK


def _add_check(sub):
    c = sub.add_parser("check", help="validate the configuration and run the security checks; start nothing")
    add_config_argument(c)
    c.add_argument("--user", metavar="NAME",
                   help="check as the user the agent runs as (name or uid; default: you): secrets files must "
                        "be owned by it, and it must not be root")
    c.set_defaults(func=_check)


def _run(args):
    """``civicedge gateway run``: the agent, until SIGTERM or SIGINT (docs/gateway-agent.md)."""
    import logging
    import signal
    import threading

    from gateway import app

    cfg, status = load_config(args)
    if cfg is None:
        return status
    app.setup_logging(getattr(logging, args.log_level.upper()))
    log = logging.getLogger("civicedge.gateway")
    try:
        secrets = security.enforce(cfg)  # logs each finding
    except security.InsecureConfig as e:
        return _fail("%s: %d security problem%s (listed above; `civicedge gateway check` shows "
                     "them too); refusing to start" % (cfg.file, len(e.findings),
                                                       "s" * (len(e.findings) != 1)),
                     EXIT_INSECURE)
    except config.ConfigError as e:
        return _fail(e, EXIT_INVALID)
    from gateway import ops

    try:  # one agent per data directory; status and wipe look for this lock
        lock = ops.hold_agent_lock(cfg.data_dir)  # noqa: F841 (held for the process's life)
    except (ops.OpsError, OSError) as e:
        return _fail(e, EXIT_FAILED)
    stop = threading.Event()

    def on_signal(signum, _frame):
        if not stop.is_set():
            log.info("%s: stopping (storing what is queued, then closing)",
                     signal.Signals(signum).name)
            app.sd_notify("STOPPING=1")
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):  # from here: a stop while building is kept
        signal.signal(signum, on_signal)
    try:
        agent = app.build(cfg, secrets)
    except Exception as e:  # noqa: BLE001 (the outbox, a profile, a missing part: say which)
        log.error("cannot start: %s: %s", type(e).__name__, e)
        return EXIT_FAILED

    def ready():
        log.info("running: %s", summary(cfg))
        app.sd_notify("READY=1\nSTATUS=running: site %s, gateway %s" % (cfg.site_id, cfg.gateway_id))

    metrics = None
    if cfg.metrics.enabled:
        try:
            from gateway.metrics import MetricsServer

            metrics = MetricsServer(cfg.metrics.host, cfg.metrics.port, agent.snapshot)
            log.info("metrics on %s", metrics.url)
        except (ImportError, OSError, ValueError) as e:  # the agent's job goes on without them
            log.error("metrics not served on %s:%d: %s (readings still flow)",
                      cfg.metrics.host, cfg.metrics.port, e)
    try:
        agent.run(stop, ready=ready)
    except Exception:  # noqa: BLE001 (logged on one line; systemd restarts the unit)
        log.exception("the agent failed")
        return EXIT_FAILED
    finally:
        if metrics is not None:
            metrics.stop()
    return EXIT_OK


def _add_run(sub):
    r = sub.add_parser("run", help="run the agent (as the systemd unit does) until SIGTERM/SIGINT")
    add_config_argument(r)
    r.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="least severe log lines written to stderr (default %(default)s)")
    r.set_defaults(func=_run)


from civicedge.cmd_gateway_ops import SUBCOMMANDS as OPS_SUBCOMMANDS  # noqa: E402

SUBCOMMANDS = (_add_check, _add_run) + OPS_SUBCOMMANDS


def register(sub):
    gw = sub.add_parser("gateway", help="the Raspberry Pi gateway agent: run it, check its configuration, status, export, wipe")
    gwsub = gw.add_subparsers(dest="gateway_command", metavar="GATEWAY_COMMAND")
    for add in SUBCOMMANDS:
        add(gwsub)
    gw.set_defaults(func=lambda args: (gw.print_help(), EXIT_INVALID)[1])


def build_parser():
    """A parser with only this module's commands (tests; ``python -m civicedge.cmd_gateway``)."""
    parser = argparse.ArgumentParser(prog="civicedge")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) if getattr(args, "func", None) else EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
