"""Receipts carried across the air gap: sent by the import (``--receipt-upload-to``), fetched
by a delta pull (``--delta-from``).

A receipt is named by a local path (``receipt.json``, its ``receipt.json.sha256`` beside it),
an S3 object ``s3://BUCKET/KEY/receipt.json`` (its sidecar ``…/receipt.json.sha256``; a URL
not ending in ``.json`` is a prefix holding ``receipt.json``) or an OCI artifact
``oci://REGISTRY/REPOSITORY:TAG`` written by d8mirror's transfer code (its layers titled
``receipt.json`` and ``receipt.json.sha256``). Both directions use the transfer code of
:mod:`d8mirror.transfer` and the clients and credentials of :mod:`tasks.transfer` (AWS chain or
a Secret block; registry environment or a block), never parameters. A fetched receipt's
checksum is checked by whoever reads it (:func:`d8mirror.receipt.read_receipt`), before
anything uses it; a local receipt is checked before it is sent.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from d8mirror.errors import ReceiptError
from d8mirror.receipt import RECEIPT_FILE
from d8mirror.sealed import MAX_SEALED_BYTES, SIDECAR_SUFFIX, check_sealed, sidecar_of
from d8mirror.transfer import OciUrl, S3Url, TransferManifest, s3
from d8mirror.transfer import oci_artifact as oci
from d8mirror.transfer.manifest import FileEntry, describe_file
from d8mirror.transfer.urls import is_remote, sealed_file_location

from . import runtime
from .policy import TRANSIENT_RETRIES
from .transfer import connect, s3_client
from .transfer_models import TransferAccess, TransferTarget


def fetch_receipt(
    url: str,
    dest_dir: Path,
    *,
    endpoint_url: str | None = None,
    insecure: bool = False,
    tls_skip_verify: bool = False,
    ca_file: str | None = None,
    credentials_block: str | None = None,
) -> Path:
    """The local path of the receipt ``url`` names: a local path as it is, a remote receipt
    and its sidecar downloaded into ``dest_dir`` (replacing an earlier copy). Nothing is
    verified here: read it with :func:`~d8mirror.receipt.read_receipt`."""
    if not is_remote(url):
        return Path(url)
    target = TransferTarget(
        url=_transfer_url(url),
        endpoint_url=endpoint_url,
        insecure=insecure,
        tls_skip_verify=tls_skip_verify,
        ca_file=ca_file,
        credentials_block=credentials_block,
    )
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / RECEIPT_FILE
    for stale in (dest, sidecar_of(dest)):
        stale.unlink(missing_ok=True)
    connect(target)
    where = target.target()
    if isinstance(where, S3Url):
        name = _s3_name(url)
        client = s3_client(target)
        s3.download_object(client, where, name, dest, limit=MAX_SEALED_BYTES)
        s3.download_object(client, where, name + SIDECAR_SUFFIX, sidecar_of(dest), limit=4096)
    else:
        _fetch_from_artifact(where, dest_dir)
    return dest


def _s3_name(url: str) -> str:
    """The object name of an S3 receipt URL: its last segment when it ends in ``.json``."""
    last = url.rstrip("/").rsplit("/", 1)[-1]
    return last if last.endswith(".json") and url.count("/") > 2 else RECEIPT_FILE


def _transfer_url(url: str) -> str:
    """The transfer location: an S3 URL without its object name, an OCI URL as it is."""
    if url.startswith("s3://"):
        name = _s3_name(url)
        trimmed = url.rstrip("/")
        if trimmed.endswith("/" + name):
            return trimmed[: -len(name) - 1]
    return url


def _fetch_from_artifact(url: OciUrl, dest_dir: Path) -> None:
    client = runtime.client_for(url.registry)
    files = {f.name: f for f in oci.read_artifact(client, url).files}
    wanted = [RECEIPT_FILE, RECEIPT_FILE + SIDECAR_SUFFIX]
    missing = [name for name in wanted if name not in files]
    if missing:
        raise ReceiptError(
            f"{url} holds no {' and no '.join(missing)}: not a receipt artifact; give the URL "
            "the receipt was uploaded to"
        )
    for name in wanted:
        oci.download_file(client, url, files[name], dest_dir)


# -- send ------------------------------------------------------------------------------------------
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
