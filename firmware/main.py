# main.py: MicroPython runs this after boot.py at every reset. The composition root is
# app/main.py, shipped precompiled (app/main.mpy), so the node compiles nothing at boot.
from app.main import main

main()
