"""upload-bundle and download-bundle: carry a bundle across the air gap.

    upload-bundle:   ``{bundle_id}`` in the URL: the bundle's id ─▶ hash every file (manifest)
                     ─▶ per file (bounded by file_concurrency): upload, verify ─▶ all done?
                     commit: transfer manifest last (S3) / artifact manifest (OCI) ─▶ summary
                     artifacts ─▶ event d8mirror.bundle.uploaded
    download-bundle: remote manifest (refuse an incomplete upload) ─▶ per file (bounded by
                     file_concurrency): download via .partial, verify ─▶ local manifest last
                     ─▶ summary artifacts

A failed file never stops the others; the run then ends Failed naming it, nothing is committed,
and Retry re-sends only what failed (finished files come back Cached, or are skipped by HEAD).
The CLI, a deployment run and the UI's Retry call these flows as they are: the file bound comes
from the parameters (``flows.bounded``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.futures import PrefectFuture

from d8mirror.delta import bundle_id
from d8mirror.errors import TransferFailed
from d8mirror.progress import Progress
from d8mirror.units import human_rate, human_seconds, human_size_exact
from flows.bounded import submit_bounded, task_runner
from flows.progress import reporting
from flows.states import error_text
from tasks.transfer import (
    build_manifest_task,
    commit_upload_task,
    connect,
    download_file_task,
    finish_download_task,
    read_remote_manifest_task,
    upload_file_task,
)
from tasks.transfer_models import (
    DownloadParameters,
    FileRow,
    TransferFiles,
    TransferSummary,
    UploadParameters,
)

__all__ = ["UPLOADED_EVENT", "TransferFailed", "download_bundle", "upload_bundle"]

UPLOADED_EVENT = "d8mirror.bundle.uploaded"
#: In an upload URL: replaced by the bundle's id (:func:`d8mirror.delta.bundle_id`).
BUNDLE_ID_FIELD = "{bundle_id}"


def expect_files(progress: Progress, manifest: TransferFiles) -> None:
    """Every file of the manifest is an item, its bytes one "blob" keyed by its name."""
    progress.expect_items(len(manifest.files))
    for file in manifest.files:
        progress.expect({file.name: file.size}, item=file.name)


def _rows(manifest: TransferFiles, futures: list[PrefectFuture[Any]]) -> list[FileRow]:
    """One summary row per file, in manifest order: its outcome, or its failure."""
    rows: list[FileRow] = []
    for file, future in zip(manifest.files, futures, strict=True):
        if future.state.is_completed():
            rows.append(FileRow.done(future.state.result()))
        else:
            rows.append(FileRow.failed(file, error_text(future.state)))
    return rows


def _failed(rows: list[FileRow]) -> list[tuple[str, str]]:
    """(file, error) of each failed file, for the CLI's error block."""
    return [(r.name, r.error or "failed") for r in rows if r.status == "failed"]


def _publish(key: str, summary: TransferSummary, rows: list[FileRow]) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items()))
    verdict = (
        f"FAILED: {', '.join(summary.failed)}"
        if summary.failed
        else "OK, every file verified by SHA-256"
    )
    rate = f" ({human_rate(summary.bytes_moved / summary.seconds)})" if summary.seconds else ""
    text = (
        f"### {summary.verb} {summary.url}\n\n"
        f"* files: {summary.files} ({counts})\n"
        f"* bytes: {human_size_exact(summary.bytes)} total, "
        f"{human_size_exact(summary.bytes_moved)} transferred\n"
        f"* time: {human_seconds(summary.seconds)}{rate}\n"
        f"* verdict: {verdict}\n"
    )
    get_run_logger().info("%s", text)
    create_markdown_artifact(
        key=f"{key}-summary", markdown=text, description=f"d8mirror {summary.verb} summary"
    )
    create_table_artifact(
        key=f"{key}-files",
        table=[row.table_row() for row in rows],
        description="Files of this transfer: status, size, time, rate, error",
    )


def named_by_id(params: UploadParameters) -> UploadParameters:
    """``{bundle_id}`` in the URL becomes the bundle's id: each night's delta uploads under a
    prefix of its own (``s3://bucket/deltas/{bundle_id}``), which import-bundle applies in
    order and skips once the site's receipt lists it."""
    if BUNDLE_ID_FIELD not in params.url:
        return params
    identity = bundle_id(Path(params.bundle_dir))
    return params.model_copy(update={"url": params.url.replace(BUNDLE_ID_FIELD, identity)})


@flow(name="upload-bundle", task_runner=task_runner(), log_prints=True)
def upload_bundle(params: UploadParameters) -> TransferSummary:
    """Upload ``params.bundle_dir`` to ``params.url`` (see the module docstring)."""
    with reporting("upload") as progress:
        started = time.monotonic()
        params = named_by_id(params)
        connect(params)
        progress.phase("hash")
        manifest = build_manifest_task(params.bundle_dir)
        expect_files(progress, manifest)
        progress.phase("upload")
        futures = submit_bounded(
            lambda file: upload_file_task.submit(params, file),
            manifest.files,
            params.file_concurrency,
        )
        rows = _rows(manifest, futures)
        summary = TransferSummary.of(
            "upload", str(params.target()), rows, time.monotonic() - started
        )
        if not summary.failed:
            progress.phase("commit")
            summary.digest = commit_upload_task(params, manifest)
        _publish("bundle-upload", summary, rows)
        if summary.failed:
            raise TransferFailed(
                f"files not uploaded (nothing committed): {', '.join(summary.failed)}",
                items=_failed(rows),
            )
        emit_event(
            event=UPLOADED_EVENT,
            resource={
                "prefect.resource.id": f"d8mirror.bundle.{summary.url}",
                "prefect.resource.name": summary.url,
            },
            payload=summary.model_dump(
                include={"url", "files", "bytes", "bytes_moved", "statuses", "digest"}
            ),
        )
        return summary


@flow(name="download-bundle", task_runner=task_runner(), log_prints=True)
def download_bundle(params: DownloadParameters) -> TransferSummary:
    """Download ``params.url`` into ``params.dest_dir``, every file verified."""
    with reporting("download") as progress:
        started = time.monotonic()
        connect(params)
        progress.phase("manifest")
        manifest = read_remote_manifest_task(params)
        expect_files(progress, manifest)
        progress.phase("download")
        futures = submit_bounded(
            lambda file: download_file_task.submit(params, file),
            manifest.files,
            params.file_concurrency,
        )
        rows = _rows(manifest, futures)
        summary = TransferSummary.of(
            "download", str(params.target()), rows, time.monotonic() - started
        )
        if not summary.failed:
            finish_download_task(params, manifest)
        _publish("bundle-download", summary, rows)
        if summary.failed:
            raise TransferFailed(
                f"files not downloaded: {', '.join(summary.failed)}", items=_failed(rows)
            )
        return summary
