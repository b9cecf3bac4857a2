"""``FileFlash``: an ESP32's flash partition as a file, for littlefs in the unix port.

A block device with ``readblocks``/``writeblocks``/``ioctl`` (the extended interface, with
offsets, that ``vfs.VfsLfs2`` uses), backed by a file that outlives the process. Every write
goes to the file (an unbuffered ``write``: the kernel's page cache, which outlives the
process) before ``writeblocks`` returns, so killing the process mid-write leaves exactly what
a power cut leaves on NOR flash: some blocks written, one perhaps half-written. (No
``fsync``: a killed process is the power cut modelled, not a host crash.) Erase fills a
block with 0xFF as flash does.

``readblocks``/``writeblocks`` are called from C for every littlefs access (~80 a deep-sleep
wake at ``board.py --flash-read 1024``, fewer at the fleet's 4096;
``flashcache.CachedImageFlash`` serves most from copies of recent blocks): they are kept
small enough that MicroPython runs them without allocating a frame on the heap (a frame over
11 words is heap-allocated, and counts towards the firmware's ``gc.threshold``).

``mount_flash(path, mount_point="/flash", size=...)`` formats a new image (or one that does
not mount) and mounts it, for tests of the storage modules. ``board.py`` mounts its image
with ``mount_image``, which never reformats one that does not mount (power-cut damage must
stay visible), and flashes a host directory onto it with ``install``.
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
        self._erased = erased = self._erased_piece()
        if size < block_count * block_size:
            with open(path, "ab") as f:
                missing = block_count * block_size - size
                while missing > 0:
                    n = min(missing, len(erased))
                    f.write(erased if n == len(erased) else erased[:n])
                    missing -= n
        self._f = open(path, "r+b")

    def _erased_piece(self):
        """What an erase writes (``ioctl``) and a short image is padded with: a whole block."""
        return b"\xff" * self.block_size

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
        if op == 6:  # erase a block, in pieces of ``_erased_piece`` (one write for a whole block)
            self._f.seek(arg * self.block_size)
            for _ in range(self.block_size // len(self._erased)):
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


_ERASED = b"\xff" * 256


class ImageFlash(FileFlash):
    """``FileFlash`` (``board.py``'s) whose erase writes the block in 256-byte pieces, as the
    board's flash always has: a process killed mid-erase (a power cut) can leave part of the
    block erased, as on NOR flash. It holds no erased block of its own (4 KB of a 100 KB
    board's heap): a short image is padded from the same 256 bytes."""

    def _erased_piece(self):
        return _ERASED


def mount_image(path, blocks, read_size=32, mount_point="/flash", cache_blocks=0):
    """Mount the image ``path`` (``blocks`` erase blocks) at ``mount_point`` with littlefs's
    read size ``read_size`` (bytes) and the last ``cache_blocks`` blocks read kept in the
    heap. A new image is made (erased flash) and formatted; an existing one must mount as it
    is (after a power cut that is the test), so an image that does not mount raises
    ``OSError``, never gets formatted."""
    try:
        new = os.stat(path)[6] == 0
    except OSError:
        new = True
    if new:  # erased flash, a block a time (256 bytes a time if the heap has no block's worth)
        try:
            piece = b"\xff" * BLOCK_SIZE
        except MemoryError:
            piece = _ERASED
        with open(path, "wb") as f:
            for _ in range(blocks * BLOCK_SIZE // len(piece)):
                f.write(piece)
        piece = None
    if cache_blocks > 0:  # loaded only then: a 100 KB board's shim keeps its size
        from flashcache import CachedImageFlash

        dev = CachedImageFlash(path, blocks, cache_blocks)
    else:
        dev = ImageFlash(path, blocks)
    if new:
        vfs.VfsLfs2.mkfs(dev)
    try:
        vfs.mount(vfs.VfsLfs2(dev, readsize=read_size), mount_point)
    except OSError as e:
        raise OSError("the flash image %s does not mount as littlefs (%r)" % (path, e))


def install(src, dst):
    """Copy the host directory ``src`` onto the flash directory ``dst`` (as flashing does;
    ``__pycache__`` left out)."""
    buf = bytearray(512)
    for entry in os.ilistdir(src):
        name, kind = entry[0], entry[1]
        if name == "__pycache__":
            continue
        if kind == 0x4000:
            try:
                os.mkdir(dst + "/" + name)
            except OSError:
                pass
            install(src + "/" + name, dst + "/" + name)
            continue
        with open(src + "/" + name, "rb") as fin, open(dst + "/" + name, "wb") as fout:
            n = fin.readinto(buf)
            while n:
                fout.write(memoryview(buf)[:n])
                n = fin.readinto(buf)
