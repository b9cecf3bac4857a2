"""The firmware's code as a ROMFS image in RAM, for ``board.py --code-rom`` (MicroPython).

``build(root, outside)`` reads every ``.mpy`` and ``.py`` file under the directory ``root``
(the flash) into one ROMFS image (a ``bytearray``, in the heap or in memory the process holds
outside it; the format of MicroPython's ``vfs.VfsRom``, as
``mpremote romfs`` writes it), ``mount(image, at)`` mounts it. A module imported from it runs
its bytecode in place: no littlefs lookups for every path on ``sys.path``, no copy of the
file into the heap. ``board.py`` builds the image from the flash at every power-on, so it
holds exactly the code on the flash then; the firmware never rewrites its own code (it has
no over-the-air update), so the two stay the same.

Sizes are worked out first (``os.stat``) and the image filled in place, so building it takes
only the image's own bytes of heap.
"""

import os
import vfs

_HEADER = b"\xd2\xcd\x31"
_DIR = 4  # record kinds (MicroPython extmod/vfs_rom.c)
_FILE = 5
_DATA = 2


def _uint_len(n):
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _put_uint(buf, i, n):
    """``n`` at ``buf[i:]``, big-endian base 128 (0x80: more follows); returns the end."""
    end = i + _uint_len(n)
    k = end - 1
    buf[k] = n & 0x7F
    n >>= 7
    while n:
        k -= 1
        buf[k] = 0x80 | (n & 0x7F)
        n >>= 7
    return end


def _record_len(payload):
    return 1 + _uint_len(payload) + payload


def _is_code(name):
    return name.endswith(".mpy") or name.endswith(".py")


def _plan(path):
    """``[(name, is_dir, size or children, payload length)]`` of the code under ``path``."""
    out = []
    for entry in sorted(os.ilistdir(path)):
        name, kind = entry[0], entry[1]
        full = path + "/" + name
        if kind == 0x4000:
            children = _plan(full)
            if children:
                body = sum(_record_len(c[3]) for c in children)
                out.append((name, True, children, _uint_len(len(name)) + len(name) + body))
        elif _is_code(name):
            size = os.stat(full)[6]
            out.append((name, False, size, _uint_len(len(name)) + len(name) + _record_len(size)))
    return out


def _fill(buf, i, path, plan):
    for name, is_dir, what, payload in plan:
        i = _put_uint(buf, i, _DIR if is_dir else _FILE)
        i = _put_uint(buf, i, payload)
        i = _put_uint(buf, i, len(name))
        buf[i:i + len(name)] = name.encode()
        i += len(name)
        if is_dir:
            i = _fill(buf, i, path + "/" + name, what)
            continue
        i = _put_uint(buf, i, _DATA)
        i = _put_uint(buf, i, what)
        with open(path + "/" + name, "rb") as f:
            got = f.readinto(memoryview(buf)[i:i + what])
        if got != what:
            raise OSError("coderom: %s/%s changed while it was read" % (path, name))
        i += what
    return i


def area(spec):
    """``(address, size)`` of memory outside the heap for the image, from ``spec``
    (``"ADDRESS SIZE"``, decimal, as ``$CIVICEDGE_ROM_AREA`` gives it; None or "": none)."""
    if not spec:
        return None
    parts = spec.split()
    if len(parts) != 2:
        raise ValueError("coderom: a ROM area is 'ADDRESS SIZE', got %r" % spec)
    return int(parts[0]), int(parts[1])


def build(root, outside=None):
    """The ROMFS image (a ``bytearray``) of the code files under ``root``: in the heap, or
    in ``outside`` (``(address, size)`` of memory the process holds outside the heap, from
    ``area``) when it fits there. An image outside the heap is where a chip's ROMFS is (in
    flash, not RAM): the garbage collector never scans it and it takes no heap."""
    plan = _plan(root)
    body = sum(_record_len(c[3]) for c in plan)
    size_len = _uint_len(body)
    pad = (len(_HEADER) + size_len + body) % 2  # the image's length is even
    size = len(_HEADER) + pad + size_len + body
    if outside is not None and size <= outside[1]:
        import uctypes

        buf = uctypes.bytearray_at(outside[0], size)
    else:
        if outside is not None:  # said, since the heap left to the firmware is less
            print("coderom: the image (%d bytes) is larger than the ROM area (%d): it is in the heap"
                  % (size, outside[1]))
        buf = bytearray(size)
    buf[0:3] = _HEADER
    i = 3
    if pad:
        buf[3] = 0x80  # a leading zero digit of the length
        i = 4
    i = _put_uint(buf, i, body)
    if _fill(buf, i, root, plan) != len(buf):
        raise OSError("coderom: the image of %s came out the wrong size" % root)
    return buf


def mount(image, at):
    """Mount ``image`` (from ``build``) read-only at ``at``."""
    vfs.mount(vfs.VfsRom(image), at)
