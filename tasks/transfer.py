"""Prefect tasks of the transfer: thin wrappers over ``d8mirror.transfer``, one task per file.

Clients are built inside the process from credentials resolved here (AWS chain, Secret block,
D8_MIRROR_* environment), never from parameters. Per-file tasks retry transient failures only
(TRANSIENT_RETRIES) and are cached by file content and flow run, so the UI's Retry skips files
that already went through; a new run re-checks them cheaply (HEAD, same SHA-256: skipped).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from d8mirror.progress import Batched, ItemProgress
from d8mirror.transfer import OciUrl, S3Url, StorageAccessError, build_manifest, s3
from d8mirror.transfer import oci_artifact as oci
from d8mirror.transfer.manifest import write_local_manifest
from d8mirror.transfer.results import FileResult

from . import runtime
from .credentials import target_credentials
from .policy import TRANSIENT_RETRIES, content_key
from .transfer_models import (
    DownloadParameters,
    FileOutcome,
    TransferAccess,
    TransferFile,
    TransferFiles,
    TransferTarget,
    UploadParameters,
)


def _s3_credentials_from_block(block_name: str) -> s3.S3Credentials:
    from prefect.blocks.system import Secret

    raw = Secret.load(block_name).get()  # type: ignore[union-attr]
    try:
        doc = raw if isinstance(raw, dict) else json.loads(str(raw))
        return s3.S3Credentials(
            str(doc["aws_access_key_id"]),
            str(doc["aws_secret_access_key"]),
            doc.get("aws_session_token"),
        )
    except (ValueError, KeyError, TypeError):
        # from None: a JSON error message could quote part of the secret
        raise StorageAccessError(
            f"Secret block {block_name!r} must hold a JSON object with aws_access_key_id and "
            "aws_secret_access_key"
        ) from None


def connect(params: TransferTarget) -> None:
    """Resolve credentials for ``params.url`` in this process (flow start, before any task)."""
    target = params.target()
    if isinstance(target, OciUrl):
        runtime.register_endpoint(
            target.registry,
            tls=params.tls(),
            credentials=target_credentials(target.registry, params.credentials_block),
        )
        return
    creds = (
        _s3_credentials_from_block(params.credentials_block) if params.credentials_block else None
    )
    runtime.set_s3_credentials(_s3_key(params), creds)


def _s3_key(params: TransferAccess) -> str:
    return json.dumps(
        [
            params.endpoint_url,
            params.region,
            params.tls_skip_verify,
            params.ca_file,
            params.concurrency,
            params.part_size_mib,
        ]
    )


def s3_client(params: TransferAccess) -> s3.S3Client:
    """The shared boto3 client for these settings (clients are thread-safe)."""
    settings = params.s3_settings()
    return runtime.s3_client(
        _s3_key(params), lambda credentials: s3.make_client(settings, credentials)
    )


def _file_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    params: UploadParameters | DownloadParameters = parameters["params"]
    file: TransferFile = parameters["file"]
    where = params.bundle_dir if isinstance(params, UploadParameters) else params.dest_dir
    return content_key(
        context.task.name,
        params.url,
        params.endpoint_url,
        str(Path(where).resolve()),
        file.model_dump(exclude_none=True),
        str(context.task_run.flow_run_id),
    )


# -- upload --------------------------------------------------------------------------------------
@task(name="build-transfer-manifest")
def build_manifest_task(bundle_dir: str) -> TransferFiles:
    """Hash every file of the bundle (streamed; cross-checked with its .sha256 sidecar)."""
    return TransferFiles.of(build_manifest(Path(bundle_dir)))


@task(
    name="upload-file",
    task_run_name="upload-{file.name}",
    cache_key_fn=_file_key,
    persist_result=True,
    result_serializer="json",
    **TRANSIENT_RETRIES,
)
def upload_file_task(params: UploadParameters, file: TransferFile) -> FileOutcome:
    """Upload one file (skipped when the same content is already there), verified."""
    entry = file.entry()
    path = Path(params.bundle_dir) / entry.name
    target = params.target()
    item = file_item("upload", file)
    moved = Batched(partial(item.moved, file.name))
    if isinstance(target, S3Url):
        result = s3.upload_file(
            s3_client(params), target, path, entry, params.s3_settings(), on_progress=moved
        )
    else:
        result = oci.upload_file(
            runtime.client_for(target.registry),
            target,
            path,
            entry,
            chunk_size=params.chunk_bytes(),
            on_progress=moved,
        )
    return FileOutcome.of(file_done(item, result))


def file_item(operation: str, file: TransferFile) -> ItemProgress:
    """The progress item of one file; its bytes are one "blob" keyed by its name."""
    item = runtime.progress_for(operation).item(file.name)
    item.phase(operation)
    item.expect({file.name: file.size})
    return item


def file_done(item: ItemProgress, result: FileResult) -> FileResult:
    """A file already there (skipped, present) is reused; one sent or fetched, moved."""
    if result.status in ("skipped", "present"):
        item.reused(result.name, result.size)
    else:
        item.blob_done(result.name, result.size)
    item.done()
    return result


@task(name="commit-upload", **TRANSIENT_RETRIES)
def commit_upload_task(params: UploadParameters, manifest: TransferFiles) -> str | None:
    """Write the transfer manifest last (read back), or push the artifact manifest; the
    artifact's digest for OCI, None for S3."""
    target = params.target()
    if isinstance(target, S3Url):
        s3.put_manifest(s3_client(params), target, manifest.manifest())
        return None
    return oci.commit(runtime.client_for(target.registry), target, manifest.manifest())


# -- download ------------------------------------------------------------------------------------
@task(name="read-remote-manifest", **TRANSIENT_RETRIES)
def read_remote_manifest_task(params: DownloadParameters) -> TransferFiles:
    """The remote transfer manifest; refuses an incomplete upload before any download."""
    target = params.target()
    if isinstance(target, S3Url):
        client = s3_client(params)
        manifest = s3.read_manifest(client, target)
        s3.check_complete(client, target, manifest)
    else:
        manifest = oci.read_artifact(runtime.client_for(target.registry), target)
    return TransferFiles.of(manifest)


@task(
    name="download-file",
    task_run_name="download-{file.name}",
    cache_key_fn=_file_key,
    persist_result=True,
    result_serializer="json",
    **TRANSIENT_RETRIES,
)
def download_file_task(params: DownloadParameters, file: TransferFile) -> FileOutcome:
    """Fetch one file via ``.partial`` (resumed), verified against the manifest."""
    entry = file.entry()
    dest = Path(params.dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = params.target()
    item = file_item("download", file)
    moved = Batched(partial(item.moved, file.name))
    if isinstance(target, S3Url):
        result = s3.download_file(s3_client(params), target, entry, dest, on_progress=moved)
    else:
        result = oci.download_file(
            runtime.client_for(target.registry), target, entry, dest, on_progress=moved
        )
    return FileOutcome.of(file_done(item, result))


@task(name="finish-download")
def finish_download_task(params: DownloadParameters, manifest: TransferFiles) -> None:
    """Write the transfer manifest beside the files, last."""
    write_local_manifest(Path(params.dest_dir), manifest.manifest())
