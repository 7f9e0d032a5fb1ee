"""import-bundle: bundles into the air-gapped registry, each once, and the receipt back out.

    site's receipt (sidecar checked) ─▶ uploads at the source, in name order (ids sort by
    time) ─▶ per upload, one at a time:
        listed in the receipt? skipped ─▶ download-bundle (s3://, oci://; every file verified)
        ─▶ bundle id listed? skipped ─▶ mirror-push (receipt in: the site's; out: the next,
        written after the post-push verification) ─▶ event d8mirror.bundle.imported
    ─▶ receipt uploaded to receipt_upload_to ─▶ summary + table artifacts
    ─▶ ImportFailed if an upload failed

Idempotent: a bundle whose id is in the receipt is never pushed again, so a schedule can run
it every hour over a prefix where each night's delta lands under its own id. The first
failure stops the import (a later delta may need the failed one); the uploads after it are
"not started" and the next run takes them up again. An upload without its transfer manifest
(still uploading) is listed as incomplete and left for a later run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import Event, emit_event

from d8mirror.errors import ImportFailed, MirrorError
from d8mirror.push.summary import PushResult
from d8mirror.units import human_seconds, human_size_exact
from flows.bounded import task_runner
from flows.push import mirror_push
from flows.states import error_text
from flows.transfer import download_bundle
from tasks import runtime
from tasks.import_models import ImportedBundle, ImportParameters, ImportResult, Upload
from tasks.importing import (
    applied_bundles_task,
    bundle_id_task,
    find_uploads_task,
    remove_download_task,
)
from tasks.receipts import send_receipt_task
from tasks.transfer_models import DownloadParameters

__all__ = ["IMPORTED_EVENT", "ImportFailed", "import_bundle", "run_import"]

IMPORTED_EVENT = "d8mirror.bundle.imported"


def emit_bundle_imported(params: ImportParameters, bundle: ImportedBundle) -> Event | None:
    """``d8mirror.bundle.imported``: the bundle is in the target, verified, in the receipt."""
    return emit_event(
        event=IMPORTED_EVENT,
        resource={
            "prefect.resource.id": f"d8mirror.bundle.{bundle.bundle_id}",
            "prefect.resource.name": bundle.bundle_id,
        },
        payload={
            "source": params.source,
            "registry": params.registry,
            "receipt": str(params.receipt_path().resolve()),
            **bundle.model_dump(
                include={
                    "bundle_id",
                    "name",
                    "location",
                    "layouts",
                    "tags",
                    "bytes_uploaded",
                    "blobs_uploaded",
                    "blobs_present",
                    "blobs_mounted",
                }
            ),
        },
    )


def _bundle_dir(params: ImportParameters, upload: Upload) -> Path:
    """The upload's directory: downloaded first when remote (raises when it could not be)."""
    if not upload.remote:
        return Path(upload.location)
    dest = params.downloads() / upload.local_name()
    state = download_bundle(
        DownloadParameters(
            url=upload.location, dest_dir=str(dest), **params.source_access.model_dump()
        ),
        return_state=True,
    )
    if not state.is_completed():
        raise ImportFailed(f"download of {upload.location} failed: {error_text(state)}")
    return dest


def _drop_download(params: ImportParameters, upload: Upload, bundle_dir: Path) -> None:
    if upload.remote and not params.keep_downloads:
        remove_download_task(str(bundle_dir))


def _import_one(params: ImportParameters, upload: Upload, applied: set[str]) -> ImportedBundle:
    """Skip, or download, push, verify and record one upload; never raises."""
    if not upload.complete:
        return ImportedBundle.of(
            upload, "incomplete", error="no transfer manifest: still uploading, or abandoned"
        )
    if upload.name in applied:
        return ImportedBundle.of(upload, "skipped", bundle_id=upload.name)
    started = time.monotonic()
    try:
        bundle_dir = _bundle_dir(params, upload)
    except ImportFailed as exc:
        return ImportedBundle.of(upload, "failed", error=str(exc))
    try:
        identity = bundle_id_task(str(bundle_dir))
    except MirrorError as exc:  # e.g. a delta.json that does not match its checksum file
        return ImportedBundle.of(upload, "failed", error=f"{type(exc).__name__}: {exc}")
    if identity in applied:
        _drop_download(params, upload, bundle_dir)
        return ImportedBundle.of(upload, "skipped", bundle_id=identity)
    state = mirror_push(params.push_parameters(bundle_dir), return_state=True)
    if not state.is_completed():
        return ImportedBundle.of(upload, "failed", bundle_id=identity, error=error_text(state))
    result: PushResult = state.result()
    if result.cancelled:
        return ImportedBundle.of(upload, "failed", bundle_id=identity, error="push cancelled")
    if identity not in applied_bundles_task(params.receipt):
        return ImportedBundle.of(
            upload,
            "failed",
            bundle_id=identity,
            error=f"pushed and verified, but the receipt {params.receipt} does not list it: "
            "check that the file is writable, then run the import again",
        )
    _drop_download(params, upload, bundle_dir)
    return ImportedBundle.pushed(upload, identity, result, time.monotonic() - started)


def _render(result: ImportResult) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts().items())) or "none found"
    failed = result.failed
    verdict = (
        f"FAILED: {failed[0].name}: {failed[0].error}"
        if failed
        else "OK, every imported bundle pushed, verified and in the receipt"
    )
    uploaded = sum(b.bytes_uploaded for b in result.bundles)
    return (
        f"### import {result.source} into {result.registry}\n\n"
        f"* uploads: {counts}\n"
        f"* bytes pushed: {human_size_exact(uploaded)}\n"
        f"* receipt: {result.receipt}"
        + (f" (uploaded to {result.receipt_uploaded_to})" if result.receipt_uploaded_to else "")
        + "\n"
        f"* time: {human_seconds(result.seconds)}\n"
        f"* verdict: {verdict}\n"
    )


def _publish(result: ImportResult) -> None:
    text = _render(result)
    get_run_logger().info("%s", text)
    create_markdown_artifact(
        key="import-summary", markdown=text, description="d8mirror import summary"
    )
    create_table_artifact(
        key="import-bundles",
        table=[b.table_row() for b in result.bundles],
        description="Uploads of this import: status, bundle id, layouts, bytes, time, error",
    )


@flow(name="import-bundle", task_runner=task_runner(), log_prints=True)
def import_bundle(params: ImportParameters) -> ImportResult:
    """Import every pending bundle of ``params.source`` (see the module docstring)."""
    started = time.monotonic()
    applied = set(applied_bundles_task(params.receipt))
    uploads = find_uploads_task(params)
    result = ImportResult(source=params.source, registry=params.registry, receipt=params.receipt)
    for upload in uploads:
        if result.failed or runtime.stop_requested():
            result.bundles.append(ImportedBundle.of(upload, "not started"))
            continue
        bundle = _import_one(params, upload, applied)
        result.bundles.append(bundle)
        if bundle.status == "imported":
            applied.add(bundle.bundle_id)
            emit_bundle_imported(params, bundle)
    if params.receipt_upload_to and params.receipt_path().is_file():
        result.receipt_uploaded_to = send_receipt_task(
            params.receipt, params.receipt_upload_to, params.source_access
        )
    result.seconds = round(time.monotonic() - started, 3)
    _publish(result)
    if result.failed:
        first = result.failed[0]
        raise ImportFailed(
            f"import of {first.name} into {params.registry} failed (the uploads after it wait "
            f"for the next run): {first.error}",
            items=[(b.name, b.error) for b in result.failed],
        )
    return result


def run_import(params: ImportParameters, *, on_running: list[Any] | None = None) -> ImportResult:
    """Run the flow in this process (explicit credentials were given to :mod:`tasks.runtime`
    beforehand: the CLI's session does it)."""
    try:
        return import_bundle.with_options(on_running=on_running)(params)
    finally:
        runtime.close_clients()
