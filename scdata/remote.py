"""The one owner of fsspec/gcsfs access: URL resolution, retries and verified downloads.

gcsfs must see ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before it is imported, otherwise every
call against a plain-HTTP endpoint (the GCS emulator) first tries gRPC over TLS and stalls for
tens of seconds. Importing this module sets it (unless the user chose a value).
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")


class SourceError(OSError):
    """An object in the source cannot be read (missing, truncated, unreachable)."""


class MissingObjectError(SourceError):
    """The object does not exist (a fault of the source, not a transient one)."""


def storage_options(url: str) -> dict:
    """Default options per protocol: the scBaseCount bucket is public, so GCS is anonymous."""
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("gs", "gcs"):
        return {"token": os.environ.get("SCZARR_GCS_TOKEN", "anon")}
    return {}


def url_to_fs(url: str):
    """``(filesystem, path)`` for any fsspec URL or local path."""
    return fsspec.core.url_to_fs(url, **storage_options(url))


def join(base: str, *parts: str) -> str:
    """Join URL parts with '/' (fsspec URLs are '/'-separated on every platform)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def is_local(url: str) -> bool:
    return fsspec.utils.get_protocol(url) in ("file", "local")


def local_path(url: str) -> str:
    """Filesystem path of a local URL (``file://`` stripped)."""
    fs, path = url_to_fs(url)
    return path


_NOT_TRANSIENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)


def with_retries(fn: Callable[[], T], what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Call ``fn`` retrying transient I/O errors with jittered exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except _NOT_TRANSIENT:
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            if attempt == attempts:
                raise SourceError(f"{what}: failed after {attempts} attempts: {exc}") from exc
            delay = base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
            log.warning("%s: %s (attempt %d/%d, retrying in %.1fs)", what, exc, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def object_size(url: str) -> int:
    fs, path = url_to_fs(url)
    try:
        return int(with_retries(lambda: fs.info(path), f"stat {url}")["size"])
    except FileNotFoundError as exc:
        raise MissingObjectError(f"missing object: {url} does not exist") from exc


def download(url: str, dest: str) -> int:
    """Copy ``url`` to the local file ``dest`` and verify its size; returns the size.

    The copy goes to a temporary name first, so a killed download never leaves a file that
    looks complete.
    """
    expected = object_size(url)
    if os.path.exists(dest) and os.path.getsize(dest) == expected:
        return expected
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = f"{dest}.part-{uuid.uuid4().hex[:8]}"
    fs, path = url_to_fs(url)

    def _copy() -> None:
        fs.get_file(path, tmp)
        got = os.path.getsize(tmp)
        if got != expected:
            raise OSError(f"downloaded {got} bytes of {expected}")

    try:
        with_retries(_copy, f"download {url}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return expected


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Replace the object at ``url`` in one step (rename locally, a single PUT remotely)."""
    fs, path = url_to_fs(url)
    if is_local(url):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with_retries(lambda: fs.pipe_file(path, data), f"write {url}")


def read_bytes(url: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    fs, path = url_to_fs(url)
    try:
        return with_retries(lambda: fs.cat_file(path), f"read {url}")
    except FileNotFoundError:
        return None
