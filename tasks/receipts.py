"""Receipts carried across the air gap: fetched by a delta pull (``--delta-from``).

A receipt is named by a local path (``receipt.json``, its ``receipt.json.sha256`` beside it),
an S3 object ``s3://BUCKET/KEY/receipt.json`` (its sidecar ``…/receipt.json.sha256``; a URL
not ending in ``.json`` is a prefix holding ``receipt.json``) or an OCI artifact
``oci://REGISTRY/REPOSITORY:TAG`` written by d8mirror's transfer code (its layers titled
``receipt.json`` and ``receipt.json.sha256``). :func:`fetch_receipt` brings a remote one into
a local directory with the transfer code of :mod:`d8mirror.transfer` (the clients and
credentials of :mod:`tasks.transfer`); its checksum is checked by whoever reads it
(:func:`d8mirror.receipt.read_receipt`), before anything uses it.
"""

from __future__ import annotations

from pathlib import Path

from d8mirror.errors import ReceiptError
from d8mirror.receipt import RECEIPT_FILE
from d8mirror.sealed import MAX_SEALED_BYTES, SIDECAR_SUFFIX, sidecar_of
from d8mirror.transfer import OciUrl, S3Url, s3
from d8mirror.transfer import oci_artifact as oci

from . import runtime
from .transfer import connect, s3_client
from .transfer_models import TransferTarget

REMOTE_SCHEMES = ("s3://", "oci://")


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_SCHEMES)


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
