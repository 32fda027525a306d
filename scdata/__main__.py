import gc
import sys

from .cli import main

code = main()
# The work is done and written: spare the interpreter's exit a cyclic-GC sweep of every object
# the libraries left behind (about 0.5 s after a run that loaded Dask, numba and matplotlib).
gc.freeze()
sys.exit(code)
