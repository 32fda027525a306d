"""The one owner of fsspec/gcsfs access: URL resolution, credentials, retries and verified downloads.

gcsfs must see ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before it is imported, otherwise every
call against a plain-HTTP endpoint (the GCS emulator) first tries gRPC over TLS and stalls for
tens of seconds. Importing this module sets it (unless the user chose a value).

Retries: gcsfs already retries each request (6 tries over ~30 s); ``with_retries`` adds
``SCZARR_IO_ATTEMPTS`` (default 5) attempts with jittered backoff around whole operations, so an
hours-long ingest rides out a few minutes of outage, and when the errors persist it raises a
``SourceError`` that names the object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")


class SourceError(OSError):
    """An object in the source cannot be read (missing, truncated, unreachable)."""


class MissingObjectError(SourceError):
    """The object does not exist (a fault of the source, not a transient one)."""


class AccessError(SourceError):
    """The object store refused the request: missing or insufficient credentials."""


def gcs_token() -> str:
    """What gcsfs authenticates with: ``SCZARR_GCS_TOKEN`` when set (``anon``, ``google_default``,
    ``cloud``, a credentials file), else Google's application default credentials when a file of
    them exists (``GOOGLE_APPLICATION_CREDENTIALS`` or gcloud's), else anonymous: the scBaseCount
    bucket is public. Only the method or a file's path is handed around, never a secret, and the
    metadata server is not probed unless asked for (off Google Cloud it costs seconds per process)."""
    explicit = os.environ.get("SCZARR_GCS_TOKEN")
    if explicit:
        return explicit
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or os.path.exists(_gcloud_adc_path()):
        return "google_default"
    return "anon"


def _gcloud_adc_path() -> str:
    root = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    return os.path.join(root, "application_default_credentials.json")


def storage_options(url: str) -> dict:
    """Default options per protocol. GCS: ``gcs_token()``; no listings cache, because other
    processes (workers, a concurrent ingest) change the store under this one; and each upload
    checked against the MD5 the server reports, so a write stored other than sent is an error
    (retried, then naming the object) instead of a silently corrupt chunk."""
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("gs", "gcs"):
        return {"token": gcs_token(), "use_listings_cache": False, "consistency": "md5"}
    return {}


_USERINFO = re.compile(r"://[^/@\s\"']+@")  # a literal prefix: scans a 20 MB manifest in ms
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&](?:access_token|token|key|secret|password|passwd|sig|signature|credential|"
    r"x-goog-signature|x-goog-credential|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&#\s\"']*",
    re.IGNORECASE,
)
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """``text`` with the credentials a URL can carry (``user:password@``, signed-URL and token
    query parameters) replaced, for anything recorded in the store or printed: the URLs
    themselves keep them, so that they still reach the object."""
    text = _USERINFO.sub(f"://{REDACTED}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}{REDACTED}", text)


def redacting(echo: Callable[[str], object]) -> Callable[[str], object]:
    """``echo`` (print, a logger…) with ``redact`` applied to every message."""
    return lambda message: echo(redact(str(message)))


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


_NOT_TRANSIENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, SourceError)
"""Faults that another attempt cannot mend; a ``SourceError`` has already been retried."""
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_ATTEMPTS = 5


def io_attempts() -> int:
    """Attempts per operation: ``SCZARR_IO_ATTEMPTS`` (read at each call, so workers follow
    their own environment), default 5."""
    value = os.environ.get("SCZARR_IO_ATTEMPTS", "")
    try:
        return max(1, int(value)) if value else DEFAULT_ATTEMPTS
    except ValueError:
        raise ValueError(f"SCZARR_IO_ATTEMPTS must be a positive integer, got {value!r}") from None


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: network and server faults, not a missing object,
    a refusal or bad input. gcsfs's ``HttpError`` (raised once its own retries are spent) is not
    an ``OSError``, so it is classified by its status code; its ``ChecksumError`` (an upload
    stored other than sent) may be damage in transit."""
    if isinstance(exc, _NOT_TRANSIENT) or is_refusal(exc):
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    return name == "ChecksumError" or (name == "HttpError" and _status(exc) in _TRANSIENT_HTTP)


def _status(exc: BaseException) -> int | None:
    try:
        return int(getattr(exc, "code", None))
    except (TypeError, ValueError):
        return None


def is_refusal(exc: BaseException) -> bool:
    """The store said no (401/403): no retry mends that, credentials do. gcsfs raises a 401 as
    ``HttpError`` and a 403 as an ``OSError`` whose message starts with "Forbidden"."""
    if type(exc).__name__ == "HttpError":
        return _status(exc) in (401, 403)
    return isinstance(exc, OSError) and not isinstance(exc, SourceError) and str(exc).startswith("Forbidden")


def _refused(what: str, exc: BaseException) -> AccessError:
    return AccessError(f"{redact(what)}: access refused ({type(exc).__name__}: {redact(str(exc)).splitlines()[0]}); "
                       "a private bucket needs credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud's application "
                       "default credentials, or SCZARR_GCS_TOKEN")


def _failed(what: str, attempts: int, exc: BaseException) -> SourceError:
    return SourceError(f"{redact(what)}: failed after {attempts} attempts: {type(exc).__name__}: {redact(str(exc))}")


def _next_delay(exc: Exception, what: str, attempt: int, attempts: int, base_delay: float) -> float:
    """Seconds to wait before trying again after ``exc``; raises when there is no point: a
    refusal, a fault no retry mends (re-raised as is), or the last attempt."""
    if is_refusal(exc):
        raise _refused(what, exc) from exc
    if not is_transient(exc):
        raise exc
    if attempt == attempts:
        raise _failed(what, attempts, exc) from exc
    delay = base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
    log.warning("%s: %s: %s (attempt %d/%d, retrying in %.1fs)", redact(what), type(exc).__name__,
                redact(str(exc)), attempt, attempts, delay)
    return delay


def with_retries(fn: Callable[[], T], what: str, attempts: int | None = None, base_delay: float = 0.5) -> T:
    """Call ``fn`` retrying transient I/O errors with jittered exponential backoff; when they
    persist, a ``SourceError`` naming ``what`` (the operation and the object's URL)."""
    attempts = attempts or io_attempts()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            time.sleep(_next_delay(exc, what, attempt, attempts, base_delay))
    raise AssertionError("unreachable")


async def with_retries_async(fn: Callable[[], Awaitable[T]], what: str, attempts: int | None = None,
                             base_delay: float = 0.5) -> T:
    """``with_retries`` for coroutines (Zarr's store calls): the same policy, an async sleep."""
    attempts = attempts or io_attempts()
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except Exception as exc:
            await asyncio.sleep(_next_delay(exc, what, attempt, attempts, base_delay))
    raise AssertionError("unreachable")


def object_size(url: str) -> int:
    fs, path = url_to_fs(url)
    try:
        return int(with_retries(lambda: fs.info(path), f"stat {url}")["size"])
    except FileNotFoundError as exc:
        raise MissingObjectError(f"missing object: {url} does not exist") from exc


PART = ".part-"
"""A download in progress is ``DEST.part-HOST-PID-RANDOM``: who wrote it, so the next download of
``DEST`` can tell a dead writer's leftover from a live one's file."""
STALE_PART_SECONDS = 3600.0
"""A part file of another host, or of the old unnamed form, untouched this long is a leftover."""


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_parts(dest: str) -> list[str]:
    """Delete the partial downloads of ``dest`` that a killed process left behind (``kill -9``
    skips the ``finally`` that removes them): those written on this host by a process that no
    longer exists, and any not modified for ``STALE_PART_SECONDS``. Returns the deleted paths."""
    import glob

    return _remove_stale(glob.glob(glob.escape(dest) + PART + "*"))


def remove_stale_parts_in(directory: str) -> list[str]:
    """``remove_stale_parts`` for every file in ``directory`` (a worker's scratch: the leftovers
    of experiments that the next run may never download again)."""
    import glob

    return _remove_stale(glob.glob(os.path.join(glob.escape(directory), "*" + PART + "*")))


def _remove_stale(paths: list[str]) -> list[str]:
    host, removed = socket.gethostname(), []
    for path in paths:
        fields = path.rsplit(PART, 1)[1].rsplit("-", 2)
        try:
            dead = len(fields) == 3 and fields[0] == host and not _writer_alive(int(fields[1]))
            old = time.time() - os.path.getmtime(path) > STALE_PART_SECONDS
            if dead or old:
                os.remove(path)
                removed.append(path)
        except (ValueError, FileNotFoundError):  # not one of ours, or another process removed it first
            continue
    if removed:
        log.info("removed %d partial download(s) left by killed processes: %s", len(removed), ", ".join(removed))
    return removed


def download(url: str, dest: str) -> int:
    """Copy ``url`` to the local file ``dest`` and verify its size; returns the size.

    The copy goes to a temporary name first, so a killed download never leaves a file that
    looks complete; the leftovers of killed downloads of ``dest`` go at the next download.
    """
    expected = object_size(url)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    remove_stale_parts(dest)
    if os.path.exists(dest) and os.path.getsize(dest) == expected:
        return expected
    tmp = f"{dest}{PART}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
