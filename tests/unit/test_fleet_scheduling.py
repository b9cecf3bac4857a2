"""The fleet's scheduling policy (``sched.batch_scheduling``): the calling thread, and what
it starts afterwards, run under Linux's ``SCHED_BATCH``; ``restore_scheduling`` puts the
thread back; a policy the caller chose is kept."""

import os
import subprocess
import sys
import threading

import pytest

from simulators.fleet.sched import batch_scheduling, policy_name, restore_scheduling

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")


def _in_thread(fn):
    """``fn()`` on a new thread (a policy is a thread's own): its result, or its exception."""
    out = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (raised again in the test's thread)
            out["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_the_thread_and_a_child_it_starts_run_batch_until_restored():
    def body():
        before = batch_scheduling()
        mine = os.sched_getscheduler(0)
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            childs = os.sched_getscheduler(child.pid)
        finally:
            child.communicate(b"", timeout=30)
        restore_scheduling(before)
        return before, mine, childs, os.sched_getscheduler(0)

    before, mine, childs, after = _in_thread(body)
    assert before == os.SCHED_OTHER
    assert mine == os.SCHED_BATCH
    assert childs == os.SCHED_BATCH  # inherited: the fleet's nodes, gateways and brokers
    assert after == os.SCHED_OTHER


def test_a_policy_the_caller_chose_is_kept():
    def body():
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        got = batch_scheduling()
        policy = os.sched_getscheduler(0)
        restore_scheduling(got)
        return got, policy, os.sched_getscheduler(0)

    got, policy, after = _in_thread(body)
    assert got is None
    assert policy == os.SCHED_IDLE
    assert after == os.SCHED_IDLE


def test_restoring_nothing_changes_nothing():
    def body():
        restore_scheduling(None)
        return os.sched_getscheduler(0)

    assert _in_thread(body) == os.SCHED_OTHER


def test_the_policy_is_named_as_the_thread_has_it():
    def body():
        names = [policy_name()]
        before = batch_scheduling()
        names.append(policy_name())
        restore_scheduling(before)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        names.append(policy_name())  # the caller's own choice: named as it is, not as "default"
        return names

    assert _in_thread(body) == ["default", "batch", "idle"]
