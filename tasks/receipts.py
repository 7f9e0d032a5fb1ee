"""Receipts across the air gap: ``receipt.json`` + ``receipt.json.sha256`` to and from object
storage or an OCI artifact, with the transfer code of :mod:`d8mirror.transfer` and the
credentials of :mod:`tasks.transfer` (AWS chain or a Secret block; registry environment or a
block), never parameters.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from d8mirror.receipt import RECEIPT_FILE
from d8mirror.sealed import check_sealed, sidecar_of
from d8mirror.transfer import S3Url, TransferManifest, s3
from d8mirror.transfer import oci_artifact as oci
from d8mirror.transfer.manifest import FileEntry, describe_file
from d8mirror.transfer.urls import sealed_file_location

from . import runtime
from .policy import TRANSIENT_RETRIES
from .transfer import connect, s3_client
from .transfer_models import TransferAccess, TransferTarget


# -- send (helper "import") ----------------------------------------------------------------------
def send_receipt(path: Path | str, url: str, access: TransferAccess | None = None) -> str:
    """Upload the receipt at ``path`` and its sidecar to ``url`` and return where it went:

    * ``s3://BUCKET/PREFIX`` → ``PREFIX/receipt.json`` (+ ``.sha256``); ``s3://BUCKET/KEY.json``
      names the object itself; the receipt goes first, its sidecar last (a reader between the
      two sees a mismatch and refuses it, never a stale pair), each verified by HEAD;
    * ``oci://REGISTRY/REPO:TAG`` → an artifact of the two files (the upload-bundle format),
      its tag pushed last.

    The local pair is checked first: a receipt whose sidecar does not match is never sent."""
    receipt = Path(path)
    data = receipt.read_bytes()
    check_sealed(data, sidecar_of(receipt).read_text(encoding="utf-8"), where=str(receipt))
    params = TransferTarget(url=url, **(access or TransferAccess()).model_dump())
    connect(params)
    target = params.target()
    if isinstance(target, S3Url):
        folder, name = sealed_file_location(target, RECEIPT_FILE)
        client = s3_client(params)
        for local, remote in ((receipt, name), (sidecar_of(receipt), f"{name}.sha256")):
            entry = _entry_as(local, remote)
            s3.upload_file(client, folder, local, entry, params.s3_settings())
        return f"{folder}/{name}" if folder.prefix else f"s3://{folder.bucket}/{name}"
    client = runtime.client_for(target.registry)
    entries = []
    for local in (receipt, sidecar_of(receipt)):
        entry = _entry_as(local, local.name)
        oci.upload_file(client, target, local, entry, chunk_size=params.chunk_bytes())
        entries.append(entry)
    oci.commit(client, target, TransferManifest(tuple(sorted(entries, key=lambda e: e.name))))
    return str(target)


def _entry_as(path: Path, name: str) -> FileEntry:
    """``path``'s size and SHA-256 (its sidecar cross-checked) under the remote ``name``."""
    entry = describe_file(path)
    return FileEntry(name, entry.size, entry.sha256)


@task(name="send-receipt", **TRANSIENT_RETRIES)
def send_receipt_task(path: str, url: str, access: TransferAccess) -> str:
    """:func:`send_receipt` as a task (transient storage errors retried)."""
    return send_receipt(path, url, access)


# -- end of send ---------------------------------------------------------------------------------
