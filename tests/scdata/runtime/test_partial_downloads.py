"""A download killed with ``kill -9`` leaves its part file (its ``finally`` never runs); the next
download of the same file removes it, and never a part file a live process is still writing."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from scdata.runtime import remote

BODY = os.urandom(1 << 20)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves BODY; slowly when the path says so, so a download can be caught mid-way."""

    def log_message(self, *args) -> None:
        pass

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        self._headers()
        step = 1 << 14
        for at in range(0, len(BODY), step):
            try:
                self.wfile.write(BODY[at: at + step])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            if "slow" in self.path:
                time.sleep(0.05)  # ~3 s for the whole body


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _parts(dest: str) -> list[str]:
    directory = os.path.dirname(dest)
    return sorted(os.path.join(directory, p) for p in os.listdir(directory) if p.startswith(os.path.basename(dest) + ".part-"))


def test_a_killed_download_s_part_file_goes_at_the_next_download(server, tmp_path):
    dest = str(tmp_path / "SRX1.h5ad")
    code = f"from scdata.runtime import remote; remote.download({server + '/slow/SRX1.h5ad'!r}, {dest!r})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not _parts(dest) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    left = _parts(dest)
    assert left, "the download never started writing its part file"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _parts(dest) == left and not os.path.exists(dest)  # kill -9: the part file stays
    assert f"-{proc.pid}-" in os.path.basename(left[0])

    assert remote.download(server + "/fast/SRX1.h5ad", dest) == len(BODY)
    assert _parts(dest) == []
    with open(dest, "rb") as f:
        assert f.read() == BODY


def test_only_dead_or_old_writers_parts_are_removed(tmp_path):
    dest = str(tmp_path / "SRX2.h5ad")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)  # a process that has exited
    host = socket.gethostname()
    names = {
        "dead": f"{dest}.part-{host}-{dead_pid}-aaaa1111",
        "live": f"{dest}.part-{host}-{os.getpid()}-bbbb2222",  # this process: still writing
        "other host, fresh": f"{dest}.part-elsewhere-{dead_pid}-cccc3333",
        "other host, old": f"{dest}.part-elsewhere-{dead_pid}-dddd4444",
        "unnamed, old": f"{dest}.part-eeee5555",
    }
    for path in names.values():
        open(path, "wb").close()
    old = time.time() - remote.STALE_PART_SECONDS - 60
    for key in ("other host, old", "unnamed, old"):
        os.utime(names[key], (old, old))
    removed = remote.remove_stale_parts(dest)
    assert sorted(removed) == sorted(names[k] for k in ("dead", "other host, old", "unnamed, old"))
    assert _parts(dest) == sorted(names[k] for k in ("live", "other host, fresh"))


def test_a_worker_s_next_download_clears_its_scratch_of_dead_downloads(server, tmp_path):
    """The ingest's load task downloads into a scratch directory; the leftovers of killed
    downloads of other experiments go too (a rerun may never download those again)."""
    from scdata.ingest.worker_tasks import _local_copy
    from scdata.source.bucket import Experiment

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = scratch / f"SRX9.h5ad.part-{socket.gethostname()}-{int(done.stdout)}-ffff0000"
    stale.write_bytes(b"half")
    exp = Experiment(accession="SRX3", url=f"{server}/fast/SRX3.h5ad", obs_count=1)
    path, temporary = _local_copy(exp, keep_dir=None, scratch=str(scratch))
    assert temporary and open(path, "rb").read() == BODY
    assert not stale.exists()
