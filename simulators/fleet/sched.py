"""The scheduling policy a fleet runs under (``FleetRun.prepare`` to the end of ``run``)."""

import os


def batch_scheduling():
    """Put the calling thread under Linux's ``SCHED_BATCH`` policy, which every thread and
    process it starts from now on inherits; returns what ``restore_scheduling`` needs, or None
    where there is no such policy (not Linux), the caller chose a policy other than the
    default (kept), or the kernel refused.

    Why: a run is ~100 node processes, the runner's threads, the gateways and the brokers on
    two CPUs, passing small requests and replies back and forth (a board's request to its
    sensor server, a publish and its acks). Under the default policy a process woken by such
    a message may preempt the one running, so one round trip can cost two task switches
    and each process runs in small pieces. A ``SCHED_BATCH`` process is not preempted on a
    wakeup: the woken one waits for the running one to block or use up its slice. Nothing the
    simulation computes depends on real timing (docs/simulation-fleet.md, "Real waits"), so
    the readings are the same; a third fewer task switches, and in most runs measured 5-20 %
    more node-days a wall-minute (docs/simulation-fleet.md, "Session 15")."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return None
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return None
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:
        return None
    return os.SCHED_OTHER


def restore_scheduling(before):
    """Undo ``batch_scheduling`` (given what it returned) for the calling thread."""
    if before is not None:
        try:
            os.sched_setscheduler(0, before, os.sched_param(0))
        except OSError:
            pass


def policy_name():
    """The calling thread's policy as the run record names it: "batch", "idle", "default"
    (``SCHED_OTHER``, or no such policies: not Linux) or "other"."""
    if not hasattr(os, "sched_getscheduler"):
        return "default"
    names = {os.SCHED_OTHER: "default", getattr(os, "SCHED_BATCH", None): "batch",
             getattr(os, "SCHED_IDLE", None): "idle"}
    return names.get(os.sched_getscheduler(0), "other")
