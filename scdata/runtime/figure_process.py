"""A figure drawn by a forked child that imported matplotlib while the parent was busy.

A job's start (cluster, first kernel calls) runs on one core, and importing matplotlib takes ~0.4 s
of a figure's ~1 s. A child forked when the job starts does that import on the idle core, then
waits; the parent sends the figure's data once it has it, writes its other outputs while the
child draws, and waits for the child before it returns, so the figure exists when the job says
it does. Where fork is not the platform's way (not Linux), in a daemonic process (which may not
have children) or when fork fails, the figure is drawn in the process.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable
from typing import Any


def _import_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _serve(conn, parent_end, prepare: Callable[[], None]) -> None:
    parent_end.close()  # else the parent closing its end would not reach this one as end of file
    try:
        prepare()
    except Exception:  # drawing will meet it again and report it
        pass
    try:
        draw, args = conn.recv()
    except EOFError:  # the parent stopped before it had a figure to draw
        return
    try:
        draw(*args)
    except BaseException:
        conn.send(traceback.format_exc())
    else:
        conn.send(None)


class DrawProcess:
    """``with DrawProcess() as figure: … figure.draw(fn, *args) … figure.wait()``.

    ``draw`` calls ``fn(*args)`` in the child (in the process without one); ``wait`` returns once
    it has run and raises RuntimeError with the child's traceback if it failed. A child that is
    gone (killed) leaves the drawing to this process. Leaving the block without ``wait`` (an error
    in the parent) stops the child."""

    def __init__(self, prepare: Callable[[], None] = _import_matplotlib, forked: bool | None = None) -> None:
        self._prepare = prepare
        self._forked = sys.platform.startswith("linux") if forked is None else forked
        self._process = self._conn = None
        self._pending: tuple[Callable, tuple] | None = None

    def __enter__(self) -> DrawProcess:
        # a daemonic process (a Pool's or a Dask nanny's worker) may not have children: draw here
        if self._forked and not multiprocessing.current_process().daemon:
            ctx = multiprocessing.get_context("fork")
            self._conn, child_end = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(child_end, self._conn, self._prepare),
                                  name="sczarr-figure", daemon=True)
            try:
                process.start()
            except OSError:  # no fork now (process limit, memory): draw here
                self._conn.close()
            else:
                self._process = process
            finally:
                child_end.close()
        return self

    def draw(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pending = (fn, args)
        if self._process is not None:
            try:
                self._conn.send((fn, args))
            except OSError:  # the child is gone: wait() draws here
                pass

    def wait(self) -> None:
        if self._pending is None:  # nothing to draw
            self.__exit__()
            return
        process, conn = self._process, self._conn
        self._process = None
        if process is not None:
            try:
                failure = conn.recv()
            except EOFError:
                failure = False  # the child is gone without an answer
            finally:
                conn.close()
            process.join()
            if failure:
                raise RuntimeError(f"drawing the figure failed:\n{failure}")
            if failure is None:
                return
        fn, args = self._pending
        self._pending = None
        fn(*args)

    def __exit__(self, *exc) -> None:
        if self._process is not None:  # left early: nothing will be drawn
            self._conn.close()
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
            self._process = None
