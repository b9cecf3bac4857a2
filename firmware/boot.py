# boot.py: runs first at every reset. Nothing here may fail the boot: main.py does the work.
import gc

gc.collect()
# Collect after every ~8 KB allocated, not only when the heap is exhausted (the GC's
# documented fragmentation guard; the ESP8266 port ships ~9 KB). Loading .mpy modules leaves
# short-lived garbage between long-lived code objects; collected late, that garbage becomes
# holes no later module fits in. Measured on the built firmware (docs/benchmarks.md, heap):
# the least free heap it runs in drops by about a fifth.
gc.threshold(8192)
