"""The driver's wake-up: set by any watched future's completion, never missed, quiet otherwise."""

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from scdata.runtime.wakeup import Wakeup


def test_wait_times_out_when_nothing_finishes():
    wakeup = Wakeup()
    wakeup.watch(Future())
    assert wakeup.wait(0.05) is False


def test_a_completion_between_waits_is_not_missed():
    wakeup = Wakeup()
    future = Future()
    wakeup.watch(future)
    future.set_result(1)  # while the loop is busy elsewhere
    assert wakeup.wait(10) is True
    assert wakeup.wait(0.01) is False  # consumed: the next wait sleeps again


def test_an_already_finished_future_wakes_at_once_and_failures_wake_too():
    wakeup = Wakeup()
    done = Future()
    done.set_result(None)
    wakeup.watch(done)
    assert wakeup.wait(10) is True
    failed = Future()
    wakeup.watch(failed)
    failed.set_exception(ValueError("a load failed"))
    assert wakeup.wait(10) is True


def test_wakes_a_sleeping_waiter_from_another_thread():
    wakeup = Wakeup()
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(gate.wait, 10)
        wakeup.watch(future)
        assert wakeup.wait(0.01) is False
        gate.set()
        assert wakeup.wait(10) is True and future.done()


_GATE = threading.Event()


def _through_gate() -> bool:
    """A task that runs until the test opens the gate (by reference: an Event does not pickle)."""
    return _GATE.wait(10)


def test_dask_futures_wake_it():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        wakeup = Wakeup()
        future = client.submit(_through_gate, pure=False)
        wakeup.watch(future)
        assert wakeup.wait(0.05) is False
        _GATE.set()
        assert wakeup.wait(10) is True and future.done() and future.result() is True
