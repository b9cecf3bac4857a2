"""``CachedImageFlash``: ``board.py --flash-cache N``'s flash (MicroPython), a
``flashdev.ImageFlash`` that keeps copies of the last N whole blocks read in the heap and
serves reads of them from there. littlefs has one read cache, and a deep-sleep wake goes back
and forth between two or three metadata pairs: ~80 reads a wake, each a Python call to the
image file's seek and read; with N = 4, ~6. Writes and erases go to the file first, as
always (what a killed process leaves is the same), then to the kept copy (an erased block's
copy is dropped). A module of its own, loaded only with ``--flash-cache``, so that a board
without it (a 100 KB heap) does not hold its code.
"""

from flashdev import FileFlash, ImageFlash


class CachedImageFlash(ImageFlash):
    """``ImageFlash`` that keeps copies of the last ``cache_blocks`` whole blocks read
    (``board.py --flash-cache``) and serves reads of them from there. Writes and erases go to
    the file first, as always, then to the kept copy (an erased block's copy is dropped)."""

    def __init__(self, path, block_count, cache_blocks):
        super().__init__(path, block_count)
        self._blocks = [-1] * cache_blocks
        self._copies = [bytearray(self.block_size) for _ in range(cache_blocks)]
        self._views = [memoryview(c) for c in self._copies]
        self._next = 0

    def _kept(self, block):
        """The index of ``block``'s kept copy, read in now if it was not kept."""
        blocks = self._blocks
        if block in blocks:
            return blocks.index(block)
        i = self._next
        self._next = (i + 1) % len(blocks)
        blocks[i] = -1
        FileFlash.readblocks(self, block, self._copies[i])
        blocks[i] = block
        return i

    def readblocks(self, block, buf, offset=0):
        buf[:] = self._views[self._kept(block)][offset:offset + len(buf)]

    def writeblocks(self, block, buf, offset=0):
        FileFlash.writeblocks(self, block, buf, offset)
        if block in self._blocks:
            self._copies[self._blocks.index(block)][offset:offset + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 6 and arg in self._blocks:
            self._blocks[self._blocks.index(arg)] = -1
        return super().ioctl(op, arg)
