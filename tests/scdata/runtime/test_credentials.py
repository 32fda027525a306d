"""Credentials reach the bucket and nothing else: an ingest from a bucket that refuses requests
without a token, authenticated by a service account through Google's standard chain
(GOOGLE_APPLICATION_CREDENTIALS), leaves no trace of the token or the key in the store, the
manifest, or what it prints; credentials a URL carries are not recorded either."""

import json
import os
import re
import secrets
import subprocess
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import scdata
from scdata.ingest.driver import IngestError
from scdata.store.manifest import Manifest
from scdata.runtime.remote import gcs_token

from tests.gcs_proxy import TOKEN_PATH, GCSProxy
from tests.services import bucket_fs, gcs_emulator, upload_tree

BUCKET = "sczarr-private"
RELEASE = f"{BUCKET}/scbasecount/2026-01-12"


def _service_account(path: str, token_uri: str) -> list[str]:
    """A service-account key file whose token endpoint is the proxy; returns its secrets."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_id = secrets.token_hex(20)
    with open(path, "w") as f:
        json.dump({"type": "service_account", "project_id": "sczarr-test", "private_key_id": key_id,
                   "private_key": pem, "client_email": "ingest@sczarr-test.iam.gserviceaccount.com",
                   "client_id": "1", "token_uri": token_uri}, f)
    body = "".join(pem.strip().splitlines()[1:-1])
    return [key_id, body[:64], body[-64:]]


def _ingest(store: str, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scdata", "-v", "ingest", "--source", f"gs://{RELEASE}", "--store", store,
               "--workers", "1", "--cell-count", "1500", "--chunk-cells", "128", "--chunk-genes", "1024"]
    base = {k: v for k, v in os.environ.items() if k not in ("SCZARR_GCS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")}
    return subprocess.run(command, capture_output=True, text=True, env={**base, **env})


def test_a_token_needing_source_leaves_no_token_behind(demo_bucket, tmp_path):
    token = f"ya29.sczarr-{secrets.token_urlsafe(24)}"
    store = f"gs://{BUCKET}/stores/private.zarr"
    with gcs_emulator(BUCKET) as endpoint, GCSProxy(endpoint) as proxy:
        upload_tree(bucket_fs(proxy.url), demo_bucket, RELEASE)
        proxy.require_token(token)
        key_file = str(tmp_path / "service-account.json")
        secrets_ = [token, *_service_account(key_file, proxy.url + TOKEN_PATH)]

        anonymous = _ingest(store, {"STORAGE_EMULATOR_HOST": proxy.url})
        assert anonymous.returncode == 1 and proxy.unauthorized  # the bucket does need the token, and says so
        assert re.search(r"read gs://\S+/sample_metadata.parquet: access refused", anonymous.stderr), anonymous.stderr

        refused = len(proxy.unauthorized)
        done = _ingest(store, {"STORAGE_EMULATOR_HOST": proxy.url, "GOOGLE_APPLICATION_CREDENTIALS": key_file})
        assert done.returncode == 0, done.stderr
        assert len(proxy.unauthorized) == refused  # every request of the run carried the token

        fs = bucket_fs(endpoint)
        stored = {path: fs.cat_file(path) for path in fs.find(store.removeprefix("gs://"))}
    assert any(p.endswith("uns/sczarr_manifest/zarr.json") for p in stored) and len(stored) > 50  # manifest included
    assert "Committed" in done.stdout
    for secret in secrets_:
        leaks = [p for p, data in stored.items() if secret.encode() in data]
        assert not leaks, f"secret found in {leaks[:3]}"
        assert secret not in done.stdout and secret not in done.stderr


def test_credentials_in_urls_are_not_recorded(monkeypatch):
    """A URL may carry credentials (user:password@, a signed URL's or a token parameter): they
    are kept where the URL is used, and left out of the manifest and of messages."""
    url = "https://reader:hunter2@mirror.example/scbasecount/2026-01-12/h5ad/X.h5ad?X-Goog-Signature=c0ffee&alt=media"
    manifest = Manifest(runs=[{"source": url}], experiments=[{"accession": "SRX1", "source_url": url}])
    document = manifest.head_json().decode() + manifest.log_entry_json()  # what a commit stores
    assert "hunter2" not in document and "c0ffee" not in document
    assert "https://REDACTED@mirror.example/" in document and "alt=media" in document
    assert "hunter2" not in str(IngestError(f"experiment SRX1 ({url}): missing"))
    assert "c0ffee" not in str(scdata.ExperimentError("SRX1", url, "missing object"))

    monkeypatch.delenv("SCZARR_GCS_TOKEN", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")
    assert gcs_token() == "anon"  # the public bucket needs none
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/path/to/key.json")
    assert gcs_token() == "google_default"  # the standard chain: only its name is handed around
    monkeypatch.setenv("SCZARR_GCS_TOKEN", "anon")
    assert gcs_token() == "anon"
