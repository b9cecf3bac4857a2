"""``FileFlash``: an ESP32's flash partition as a file, for littlefs in the unix port.

A block device with ``readblocks``/``writeblocks``/``ioctl`` (the extended interface, with
offsets, that ``vfs.VfsLfs2`` uses), backed by a file that outlives the process. Every write
goes to the file (an unbuffered ``write``: the kernel's page cache, which outlives the
process) before ``writeblocks`` returns, so killing the process mid-write leaves exactly what
a power cut leaves on NOR flash: some blocks written, one perhaps half-written. (No
``fsync``: a killed process is the power cut modelled, not a host crash.) Erase fills a
block with 0xFF as flash does.

``readblocks``/``writeblocks`` are called from C for every littlefs access (hundreds per
wake cycle): they are kept small enough that MicroPython runs them without allocating a
frame on the heap (a frame over 11 words is heap-allocated, and counts towards the
firmware's ``gc.threshold``).

``mount_flash(path, mount_point="/flash", size=...)`` formats a new image (or one that does
not mount) and mounts it, for tests of the storage modules; ``board.py`` mounts images
itself and never reformats one that does not mount (power-cut damage must stay visible).
"""

import os
import vfs

BLOCK_SIZE = 4096  # the ESP32's flash erase sector


class FileFlash:
    def __init__(self, path, block_count=None, block_size=BLOCK_SIZE):
        self.path = path
        self.block_size = block_size
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if block_count is None:
            if size == 0:
                raise ValueError("flash image %s does not exist: give block_count" % path)
            block_count = size // block_size
        self.block_count = block_count
        # One erased block, made once: erasing must not allocate in a fragmented heap, and
        # padding a new image goes a block at a time so a 1 MiB image fits a small heap.
        self._erased = erased = b"\xff" * block_size
        if size < block_count * block_size:
            with open(path, "ab") as f:
                missing = block_count * block_size - size
                while missing > 0:
                    n = min(missing, block_size)
                    f.write(erased if n == block_size else erased[:n])
                    missing -= n
        self._f = open(path, "r+b")

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        n = self._f.readinto(buf)
        if n != len(buf):
            self._erased_tail(buf, n or 0)

    @staticmethod
    def _erased_tail(buf, start):
        """Past the end of a short image: erased flash."""
        for i in range(start, len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.block_count
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase a block
            self._f.seek(arg * self.block_size)
            self._f.write(self._erased)
            return 0
        return None

    def close(self):
        self._f.close()


def mount_flash(path, mount_point="/flash", block_count=512):
    """Mount the littlefs image at ``path`` (made and formatted if new or unmountable)."""
    dev = FileFlash(path, block_count)
    try:
        vfs.mount(vfs.VfsLfs2(dev), mount_point)
    except OSError:
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), mount_point)
    return dev
