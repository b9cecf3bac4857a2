# boot.py: runs first at every reset. Nothing here may fail the boot: main.py does the work.
import gc

gc.collect()
