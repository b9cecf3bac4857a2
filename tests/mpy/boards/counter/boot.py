# Test firmware (not the node firmware): boot.py runs first, in the namespace main.py shares.
booted_by = "boot.py"
