"""Wake a driver loop when any future it watches finishes, instead of polling them.

The ingest driver waits on a changing set of Dask futures (loads, summaries, writes) and one
``concurrent.futures`` future (the commit on its own thread). Polling them with
``distributed.wait(futures, timeout=...)`` every 50 ms cost the driver process about a quarter
of a core on a 2-core machine: each call builds a timed coroutine per future on the client's
event loop, and the LocalCluster's scheduler and the workers share those cores. A done-callback
per future that sets one ``threading.Event`` costs nothing while the loop sleeps.
"""

from __future__ import annotations

import threading


class Wakeup:
    """One event set by the done-callback of every future passed to ``watch``.

    The loop that owns it clears and checks in this order, so no completion is missed: ``wait``
    returns once the event is set (or at ``timeout``) and clears it; the loop then looks at its
    futures' states; a future that finishes after the clear sets the event again.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def watch(self, *futures) -> None:
        """Set the event when each of ``futures`` finishes (at once if it already has). Call it
        once per future, where the future is made: each call adds a callback."""
        for future in futures:
            future.add_done_callback(self._done)

    def _done(self, _future) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep until a watched future finishes or ``timeout`` seconds pass; True if woken."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken
