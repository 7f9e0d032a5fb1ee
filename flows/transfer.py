"""upload-bundle and download-bundle: carry a bundle across the air gap.

    upload-bundle:   hash every file (manifest) ─▶ per file (mapped, bounded): upload, verify
                     ─▶ all done? commit: transfer manifest last (S3) / artifact manifest (OCI)
                     ─▶ summary artifacts ─▶ event d8mirror.bundle.uploaded
    download-bundle: remote manifest (refuse an incomplete upload) ─▶ per file: download via
                     .partial, verify ─▶ local manifest last ─▶ summary artifacts

A failed file never stops the others; the run then ends Failed naming it, nothing is committed,
and Retry re-sends only what failed (finished files come back Cached, or are skipped by HEAD).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

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
from tasks.transfer_models import DownloadParameters, UploadParameters

UPLOADED_EVENT = "d8mirror.bundle.uploaded"


class TransferFailed(Exception):
    """Raised at the end of a transfer in which files failed; names them."""



def _collect(manifest: dict[str, Any],
             futures: list[PrefectFuture[Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for entry, future in zip(manifest["files"], futures, strict=True):
        if future.state.is_completed():
            result = future.state.result()
            rows.append({**result, "seconds": round(result["seconds"], 3), "error": ""})
        else:
            failed.append(entry["name"])
            rows.append({"name": entry["name"], "size": entry["size"], "status": "failed",
                         "seconds": 0.0, "error": error_text(future.state)})
    return rows, failed


def _summary(verb: str, url: str, rows: list[dict[str, Any]], failed: list[str],
             elapsed: float) -> dict[str, Any]:
    moved = sum(r["size"] for r in rows if r["status"] in ("uploaded", "downloaded", "resumed"))
    total = sum(r["size"] for r in rows)
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return {"url": url, "files": len(rows), "bytes": total, "bytes_moved": moved,
            "statuses": statuses, "failed": failed, "seconds": round(elapsed, 3),
            "mib_per_second": round(moved / (1 << 20) / elapsed, 1) if elapsed else None,
            "verb": verb}


def _publish(key: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary["statuses"].items()))
    verdict = (f"FAILED: {', '.join(summary['failed'])}" if summary["failed"]
               else "OK, every file verified by SHA-256")
    text = (f"### {summary['verb']} {summary['url']}\n\n"
            f"* files: {summary['files']} ({counts})\n"
            f"* bytes: {summary['bytes']} total, {summary['bytes_moved']} transferred\n"
            f"* time: {summary['seconds']} s ({summary['mib_per_second']} MiB/s)\n"
            f"* verdict: {verdict}\n")
    get_run_logger().info("%s", text)
    create_markdown_artifact(key=f"{key}-summary", markdown=text,
                             description=f"d8mirror {summary['verb']} summary")
    create_table_artifact(key=f"{key}-files", table=rows, description="Files of this transfer")


@flow(name="upload-bundle", task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
      log_prints=True)
def upload_bundle(params: UploadParameters) -> dict[str, Any]:
    """Upload ``params.bundle_dir`` to ``params.url`` (see the module docstring)."""
    started = time.monotonic()
    connect(params)
    manifest = build_manifest_task(params.bundle_dir)
    futures = [upload_file_task.submit(params, entry) for entry in manifest["files"]]
    wait(futures)
    rows, failed = _collect(manifest, futures)
    summary = _summary("upload", str(params.target()), rows, failed, time.monotonic() - started)
    if not failed:
        summary["digest"] = commit_upload_task(params, manifest)["digest"]
    _publish("bundle-upload", summary, rows)
    if failed:
        raise TransferFailed(f"files not uploaded (nothing committed): {', '.join(failed)}")
    emit_event(event=UPLOADED_EVENT,
               resource={"prefect.resource.id": f"d8mirror.bundle.{summary['url']}",
                         "prefect.resource.name": summary["url"]},
               payload={k: summary[k] for k in ("url", "files", "bytes", "bytes_moved",
                                                 "statuses", "digest")})
    return summary


@flow(name="download-bundle", task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
      log_prints=True)
def download_bundle(params: DownloadParameters) -> dict[str, Any]:
    """Download ``params.url`` into ``params.dest_dir``, every file verified."""
    started = time.monotonic()
    connect(params)
    manifest = read_remote_manifest_task(params)
    futures = [download_file_task.submit(params, entry) for entry in manifest["files"]]
    wait(futures)
    rows, failed = _collect(manifest, futures)
    if not failed:
        finish_download_task(params, manifest)
    summary = _summary("download", str(params.target()), rows, failed,
                       time.monotonic() - started)
    _publish("bundle-download", summary, rows)
    if failed:
        raise TransferFailed(f"files not downloaded: {', '.join(failed)}")
    return summary


def run_upload(params: UploadParameters) -> dict[str, Any]:
    """Run upload-bundle in this process with ``params.file_concurrency`` files at once."""
    runner = ThreadPoolTaskRunner(max_workers=params.file_concurrency)  # type: ignore[var-annotated]
    return upload_bundle.with_options(task_runner=runner)(params)  # type: ignore[arg-type]


def run_download(params: DownloadParameters) -> dict[str, Any]:
    runner = ThreadPoolTaskRunner(max_workers=params.file_concurrency)  # type: ignore[var-annotated]
    return download_bundle.with_options(task_runner=runner)(params)  # type: ignore[arg-type]
