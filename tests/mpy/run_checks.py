"""Run portable behaviour checks under the MicroPython unix port against the simulator.

    CIVICEDGE_SIM=127.0.0.1:PORT MICROPYPATH=<repo>/simulators/mpy:<repo> \\
        micropython -X heapsize=128K tests/mpy/run_checks.py tests.behaviour.bus_checks ...

For each module, every ``check_*`` function runs with a fresh ``RemoteRig``. Output, one
line per result (``tests/mpy/test_mpy_behaviour.py`` parses it):
    CHECK <module>::<name> PASS
    CHECK <module>::<name> FAIL <exception repr>     then "| "-prefixed traceback lines
    MODULE <module> FAIL <exception repr>             (the module did not import)
    DONE
"""

import gc
import io
import sys

from simrig import RemoteRig
from tests.behaviour.harness import check_names


def _report(head, e):
    print(head, "FAIL", repr(e))
    tb = io.StringIO()
    sys.print_exception(e, tb)
    for line in tb.getvalue().splitlines():
        print("|", line)


def run(module_name):
    try:
        __import__(module_name)
        module = sys.modules[module_name]
    except Exception as e:
        _report("MODULE " + module_name, e)
        return
    for name in check_names(module):
        gc.collect()
        head = "CHECK %s::%s" % (module_name, name)
        try:
            getattr(module, name)(RemoteRig())
        except Exception as e:
            _report(head, e)
            continue
        print(head, "PASS")


for _name in sys.argv[1:]:
    run(_name)
    gc.collect()
print("DONE")
