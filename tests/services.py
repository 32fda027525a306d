"""Real services for tests: a Dask scheduler with workers (optionally over TLS), and a GCS
emulator, on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _bin(name: str) -> str:
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else (shutil.which(name) or name)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@dataclass(frozen=True)
class TLSFiles:
    """A CA and one certificate it signed (for 127.0.0.1), as PEM files."""

    ca: str
    cert: str
    key: str

    def cli_args(self) -> list[str]:
        return ["--tls-ca-file", self.ca, "--tls-cert", self.cert, "--tls-key", self.key]

    def security(self):
        from distributed.security import Security

        return Security(tls_ca_file=self.ca, tls_client_cert=self.cert, tls_client_key=self.key,
                        require_encryption=True)


def make_tls_files(directory: str) -> TLSFiles:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (``cryptography``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def build(subject: str, key, issuer: str, signer, ca: bool):
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("sczarr test CA", ca_key, "sczarr test CA", ca_key, ca=True)
    cert = build("127.0.0.1", key, "sczarr test CA", ca_key, ca=False)
    paths = TLSFiles(*(os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem")))
    for path, data in ((paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM)),
                       (paths.cert, cert.public_bytes(serialization.Encoding.PEM)),
                       (paths.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    return paths


@dataclass
class DaskProcesses:
    """A running ``dask scheduler`` and its ``dask worker`` processes (each its own process
    group: a worker's nanny and the worker process it spawns die together)."""

    address: str
    scheduler: subprocess.Popen
    env: dict[str, str] | None = None
    tls: TLSFiles | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="30s", security=self.tls.security() if self.tls else None)

    def add_worker(self, name: str, wait: bool = True) -> None:
        tls = self.tls.cli_args() if self.tls else []
        self.workers[name] = subprocess.Popen(
            [_bin("dask"), "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
             "--name", name, *tls],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env=None if self.env is None else {**os.environ, **self.env})
        if wait:
            self.wait_for_workers()

    def wait_for_workers(self) -> None:
        with self.client() as client:
            client.wait_for_workers(len(self.workers), timeout=60)

    def restart_scheduler(self) -> None:
        """``kill -9`` of the scheduler, then a new one on the same address and new workers (a
        worker does not register with a scheduler that replaced its own), as a supervisor
        restarting a cluster does."""
        port = int(self.address.rsplit(":", 1)[1])
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait()
        _stop(list(self.workers.values()))
        self.scheduler = _start_scheduler(port, self.tls)
        _wait_port(port, self.scheduler)
        for name in list(self.workers):
            self.add_worker(name, wait=False)
        self.wait_for_workers()

    def kill_worker(self, name: str) -> None:
        """``kill -9`` of the worker: its nanny and its worker process, no goodbye to the scheduler."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def dask_processes(n_workers: int = 2, env: dict[str, str] | None = None,
                   tls: TLSFiles | None = None) -> Iterator[DaskProcesses]:
    """``dask scheduler`` plus ``n_workers`` ``dask worker`` processes (``w0``, ``w1``…) with
    ``env`` added to their environment, over TLS when ``tls`` is given."""
    port = free_port()
    protocol = "tls" if tls else "tcp"
    scheduler = _start_scheduler(port, tls)
    cluster = DaskProcesses(f"{protocol}://127.0.0.1:{port}", scheduler, env, tls)
    try:
        _wait_port(port, scheduler)
        for i in range(n_workers):
            cluster.add_worker(f"w{i}", wait=False)
        cluster.wait_for_workers()
        yield cluster
    finally:
        _stop([cluster.scheduler, *cluster.workers.values()])


def _start_scheduler(port: int, tls: TLSFiles | None) -> subprocess.Popen:
    args = ["--protocol", "tls", *tls.cli_args()] if tls else []
    return subprocess.Popen(
        [_bin("dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@contextlib.contextmanager
def dask_cluster(n_workers: int = 2) -> Iterator[str]:
    """``dask scheduler`` plus ``n_workers`` ``dask worker`` processes; yields the address."""
    with dask_processes(n_workers) as cluster:
        yield cluster.address


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[str]:
    """``gcp-storage-emulator`` (in memory) on loopback; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [_bin("gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory", f"--default-bucket={bucket}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop([proc])


def bucket_fs(endpoint: str):
    """gcsfs on ``endpoint`` (anonymous, no caches), for setting up and inspecting: uploads go
    through a ``GCSProxy`` (see its note on the emulator's multipart uploads), reads may not."""
    import fsspec

    return fsspec.filesystem("gs", token="anon", endpoint_url=endpoint, skip_instance_cache=True,
                             use_listings_cache=False)


def upload_tree(fs, local_dir: str, prefix: str) -> None:
    """Copy every file under ``local_dir`` to ``prefix`` (``bucket/path``) in the bucket."""
    for dirpath, _, files in os.walk(local_dir):
        for name in files:
            local = os.path.join(dirpath, name)
            fs.put_file(local, f"{prefix}/{os.path.relpath(local, local_dir)}")


def bucket_objects(fs, prefix: str, under: tuple[str, ...] = ("X", "obs")) -> dict[str, bytes]:
    """Every object under ``prefix/<under>``, by path relative to ``prefix`` (a store's chunks and
    documents, as ``helpers.store_bytes`` reads a local one)."""
    out = {}
    for part in under:
        for path in fs.find(f"{prefix}/{part}"):
            out[path[len(prefix) + 1:]] = fs.cat_file(path)
    return out
