"""Build simulated devices from plain specs (dicts), as scenario files and the simulator
socket's control channel give them.

A spec is ``{"model": NAME, "address": A, ...}``; the other keys are the model class's
constructor keyword arguments (all JSON-able), plus an optional ``"faults": [fault specs]``.
"""

MODELS = {
    "scd4x": ("simulators.scd4x", "SimSCD4X"),
    "tmp117": ("simulators.tmp117", "SimTMP117"),
    "ads1115": ("simulators.ads1115", "SimADS1115"),
    "i2cxl": ("simulators.i2cxl", "SimMaxSonar"),
    "echo": ("simulators.testdevice", "SimEchoDevice"),
}


def model_class(name):
    """The simulator class for model ``name``; ``ValueError`` names the known models."""
    if name not in MODELS:
        raise ValueError("unknown device model %r; known: %s" % (name, ", ".join(sorted(MODELS))))
    module_name, class_name = MODELS[name]
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)


def build_device(spec):
    """A device model from ``spec`` (faults attached, not yet on a bus)."""
    from simulators.faults import Fault

    spec = dict(spec)
    try:
        name = spec.pop("model")
    except KeyError:
        raise ValueError("device spec needs a 'model' field: %r" % (spec,)) from None
    faults = spec.pop("faults", [])
    device = model_class(name)(**spec)
    for f in faults:
        device.add_fault(Fault.from_spec(f))
    return device
