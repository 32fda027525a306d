"""DrawProcess: the figure is drawn by a forked child, errors come back, a lost child is replaced."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from scdata.runtime.figure_process import DrawProcess

FORK = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux only")


def _write_pid(path: str) -> None:
    with open(path, "w") as f:
        f.write(str(os.getpid()))


def _fail(message: str) -> None:
    raise ValueError(message)


def _nothing() -> None:
    pass


@FORK
def test_draws_in_a_child_and_waits_for_it(tmp_path):
    out = tmp_path / "pid"
    with DrawProcess(prepare=_nothing) as figure:
        figure.draw(_write_pid, str(out))
        figure.wait()
        assert out.exists()  # written before wait returned
    assert int(out.read_text()) != os.getpid()


def test_without_fork_draws_in_this_process_on_wait(tmp_path):
    out = tmp_path / "pid"
    with DrawProcess(prepare=_nothing, forked=False) as figure:
        figure.draw(_write_pid, str(out))
        assert not out.exists()
        figure.wait()
    assert int(out.read_text()) == os.getpid()


@pytest.mark.parametrize("forked", [pytest.param(True, marks=FORK), False])
def test_a_failed_drawing_raises_with_its_traceback(forked):
    with DrawProcess(prepare=_nothing, forked=forked) as figure:
        figure.draw(_fail, "no axes for you")
        with pytest.raises((RuntimeError, ValueError), match="no axes for you"):
            figure.wait()


@FORK
def test_a_killed_child_leaves_the_drawing_to_this_process(tmp_path):
    out = tmp_path / "pid"
    with DrawProcess(prepare=_nothing) as figure:
        os.kill(figure._process.pid, signal.SIGKILL)
        figure._process.join()
        figure.draw(_write_pid, str(out))
        figure.wait()
    assert int(out.read_text()) == os.getpid()


@FORK
def test_leaving_early_stops_the_child():
    with pytest.raises(KeyError):
        with DrawProcess(prepare=_nothing) as figure:
            child = figure._process
            raise KeyError("the job failed before the figure")
    assert not child.is_alive()
    assert child.exitcode == 0  # it saw the pipe close and returned


@pytest.mark.parametrize("forked", [pytest.param(True, marks=FORK), False])
def test_wait_without_a_drawing_returns(forked):
    with DrawProcess(prepare=_nothing, forked=forked) as figure:
        child = figure._process
        figure.wait()
    assert child is None or not child.is_alive()


def _draw_in_a_daemon(path: str) -> None:
    with DrawProcess(prepare=_nothing) as figure:
        figure.draw(_write_pid, path)
        figure.wait()


@FORK
def test_a_daemonic_process_draws_itself(tmp_path):
    """multiprocessing forbids children of daemonic processes (a Pool's workers)."""
    import multiprocessing

    out = tmp_path / "pid"
    worker = multiprocessing.get_context("fork").Process(target=_draw_in_a_daemon, args=(str(out),), daemon=True)
    worker.start()
    worker.join()
    assert worker.exitcode == 0
    assert int(out.read_text()) == worker.pid
