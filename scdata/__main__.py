import gc

gc.disable()  # importing the package allocates ~1e6 long-lived objects: collections would only walk them
from .cli import main  # noqa: E402

gc.enable()
gc.freeze()  # and later collections leave them out too
code = main()
# The work is done and written: spare the interpreter's exit a cyclic-GC sweep of every object
# the libraries left behind (about 0.5 s after a run that loaded Dask, numba and matplotlib).
gc.freeze()
raise SystemExit(code)
