"""Prefect tasks of the transfer: thin wrappers over ``d8mirror.transfer``, one task per file.

Clients are built inside the process from credentials resolved here (AWS chain, Secret block,
D8_MIRROR_* environment), never from parameters. Per-file tasks retry transient failures only
(TRANSIENT_RETRIES) and are cached by file content and flow run, so the UI's Retry skips files
that already went through; a new run re-checks them cheaply (HEAD, same SHA-256: skipped).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from d8mirror.transfer import (
    FileEntry,
    OciUrl,
    S3Url,
    StorageAccessError,
    TransferManifest,
    build_manifest,
    s3,
)
from d8mirror.transfer import oci_artifact as oci
from d8mirror.transfer.manifest import write_local_manifest

from . import runtime
from .credentials import target_credentials
from .policy import TRANSIENT_RETRIES, content_key
from .transfer_models import DownloadParameters, TransferTarget, UploadParameters

_lock = threading.Lock()
_s3_clients: dict[str, Any] = {}
_s3_credentials: dict[str, s3.S3Credentials | None] = {}


def _s3_credentials_from_block(block_name: str) -> s3.S3Credentials:
    from prefect.blocks.system import Secret

    raw = Secret.load(block_name).get()  # type: ignore[union-attr]
    try:
        doc = raw if isinstance(raw, dict) else json.loads(str(raw))
        return s3.S3Credentials(str(doc["aws_access_key_id"]),
                                str(doc["aws_secret_access_key"]),
                                doc.get("aws_session_token"))
    except (ValueError, KeyError, TypeError):
        # from None: a JSON error message could quote part of the secret
        raise StorageAccessError(
            f"Secret block {block_name!r} must hold a JSON object with aws_access_key_id and "
            "aws_secret_access_key") from None


def connect(params: TransferTarget) -> None:
    """Resolve credentials for ``params.url`` in this process (flow start, before any task)."""
    target = params.target()
    if isinstance(target, OciUrl):
        runtime.register_endpoint(target.registry, tls=params.tls(),
                           credentials=target_credentials(target.registry,
                                                          params.credentials_block))
        return
    creds = _s3_credentials_from_block(params.credentials_block) \
        if params.credentials_block else None
    with _lock:
        _s3_credentials[_s3_key(params)] = creds
        _s3_clients.pop(_s3_key(params), None)


def _s3_key(params: TransferTarget) -> str:
    return json.dumps([params.endpoint_url, params.region, params.tls_skip_verify,
                       params.ca_file, params.concurrency, params.part_size_mib])


def s3_client(params: TransferTarget) -> Any:
    """The shared boto3 client for these settings (clients are thread-safe)."""
    key = _s3_key(params)
    with _lock:
        client = _s3_clients.get(key)
        if client is None:
            client = s3.make_client(params.s3_settings(), _s3_credentials.get(key))
            _s3_clients[key] = client
        return client


def _file_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    params: TransferTarget = parameters["params"]
    where = str(getattr(params, "bundle_dir", None) or getattr(params, "dest_dir", ""))
    return content_key(context.task.name, params.url, params.endpoint_url,
                       str(Path(where).resolve()), parameters["entry"],
                       str(context.task_run.flow_run_id))


# -- upload --------------------------------------------------------------------------------------
@task(name="build-transfer-manifest")
def build_manifest_task(bundle_dir: str) -> dict[str, Any]:
    """Hash every file of the bundle (streamed; cross-checked with its .sha256 sidecar)."""
    manifest = build_manifest(Path(bundle_dir))
    return {"files": [f.to_json() for f in manifest.files]}


def _manifest(doc: dict[str, Any]) -> TransferManifest:
    return TransferManifest(tuple(FileEntry.from_json(f, "flow") for f in doc["files"]))


@task(name="upload-file", task_run_name="upload-{entry[name]}", cache_key_fn=_file_key,
      persist_result=True, result_serializer="json", **TRANSIENT_RETRIES)
def upload_file_task(params: UploadParameters, entry: dict[str, Any]) -> dict[str, Any]:
    """Upload one file (skipped when the same content is already there), verified."""
    item = FileEntry.from_json(entry, "flow")
    path = Path(params.bundle_dir) / item.name
    target = params.target()
    if isinstance(target, S3Url):
        result = s3.upload_file(s3_client(params), target, path, item, params.s3_settings())
    else:
        result = oci.upload_file(runtime.client_for(target.registry), target, path, item,
                                 chunk_size=params.chunk_bytes())
    return result.to_json()


@task(name="commit-upload", **TRANSIENT_RETRIES)
def commit_upload_task(params: UploadParameters, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the transfer manifest last (read back), or push the artifact manifest."""
    target = params.target()
    if isinstance(target, S3Url):
        s3.put_manifest(s3_client(params), target, _manifest(manifest))
        return {"url": str(target), "digest": None}
    digest = oci.commit(runtime.client_for(target.registry), target, _manifest(manifest))
    return {"url": str(target), "digest": digest}


# -- download ------------------------------------------------------------------------------------
@task(name="read-remote-manifest", **TRANSIENT_RETRIES)
def read_remote_manifest_task(params: DownloadParameters) -> dict[str, Any]:
    """The remote transfer manifest; refuses an incomplete upload before any download."""
    target = params.target()
    if isinstance(target, S3Url):
        client = s3_client(params)
        manifest = s3.read_manifest(client, target)
        s3.check_complete(client, target, manifest)
    else:
        manifest = oci.read_artifact(runtime.client_for(target.registry), target)
    return {"files": [f.to_json() for f in manifest.files]}


@task(name="download-file", task_run_name="download-{entry[name]}", cache_key_fn=_file_key,
      persist_result=True, result_serializer="json", **TRANSIENT_RETRIES)
def download_file_task(params: DownloadParameters, entry: dict[str, Any]) -> dict[str, Any]:
    """Fetch one file via ``.partial`` (resumed), verified against the manifest."""
    item = FileEntry.from_json(entry, "flow")
    dest = Path(params.dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = params.target()
    if isinstance(target, S3Url):
        result = s3.download_file(s3_client(params), target, item, dest)
    else:
        result = oci.download_file(runtime.client_for(target.registry), target, item, dest)
    return result.to_json()


@task(name="finish-download")
def finish_download_task(params: DownloadParameters, manifest: dict[str, Any]) -> None:
    """Write the transfer manifest beside the files, last."""
    write_local_manifest(Path(params.dest_dir), _manifest(manifest))
