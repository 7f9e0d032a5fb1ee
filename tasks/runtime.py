"""The one process registry of the Prefect layer: everything a run shares between its tasks for
as long as the process lives, in one place, with one :func:`reset`.

    given credentials   explicit credentials the shell was handed, by registry host (never a
                        flow parameter, never ``os.environ``): :func:`give_credentials`
    endpoints, clients  how to reach each registry and its pooled, thread-safe client
    S3 clients          boto3 clients by their settings, and credentials from Secret blocks
    blob stores         one :class:`~d8mirror.blobstore.BlobStore` object per root, so what one
                        task committed or verified is trusted by every other
    blob locations      per target registry, where a blob already is (cross-repository mounts)
    checked files       archives found to match their checksum sidecars (hashed once)
    stop request        Ctrl+C / SIGTERM in the CLI: tasks stop at the next piece
    source answers      per pull run, what the source answered (tags → digests, tag lists),
                        shared by the run's fetchers so a tag is asked once per run
    used blobs          per pull run, every digest its fetchers read or stored (its cache gc
                        keeps them: :mod:`d8mirror.cache_gc`)
    delta bases         per pull run, the base receipt's blobs of a delta pull (read once,
                        verified) and the ones the run downloaded anyway to read metadata
    progress            the :class:`~d8mirror.progress.Progress` of the operation running
                        now (its flow opens it; tasks report to it; the CLI display and the
                        flow's progress artifact read it)

The core (``d8mirror``) keeps no process state of its own: it receives these objects. Flows
and tasks reach them through the functions below; tests call :func:`reset` between runs.
Thread-safe throughout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d8mirror.blobstore import BlobStore
from d8mirror.bundle.checksums import CheckedFiles
from d8mirror.errors import SealedFileError
from d8mirror.progress import Progress
from d8mirror.pull.delta import BaseBlobs
from d8mirror.pull.fetcher import SourceAnswers, UsedBlobs
from d8mirror.push.blobs import BlobLocations
from d8mirror.receipt import read_receipt
from d8mirror.registry import Credentials, RegistryClient, TLSOptions


@dataclass(frozen=True)
class Endpoint:
    """How to reach one registry: its credentials (None = anonymous or docker config) and TLS."""

    registry: str
    credentials: Credentials | None
    tls: TLSOptions


@dataclass
class _State:
    given: dict[str, Credentials] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    clients: dict[str, RegistryClient] = field(default_factory=dict)
    s3_clients: dict[str, Any] = field(default_factory=dict)
    s3_credentials: dict[str, Any] = field(default_factory=dict)
    blob_stores: dict[str, BlobStore] = field(default_factory=dict)
    blob_locations: dict[str, BlobLocations] = field(default_factory=dict)
    checked_files: CheckedFiles = field(default_factory=CheckedFiles)
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    answers: dict[str, SourceAnswers] = field(default_factory=dict)
    used_blobs: dict[str, UsedBlobs] = field(default_factory=dict)
    layout_plans: dict[tuple[str, str], Any] = field(default_factory=dict)
    delta_bases: dict[tuple[str | None, str, str], BaseBlobs] = field(default_factory=dict)


_lock = threading.RLock()
_state = _State()


# -- credentials the shell was given -------------------------------------------------------------
def give_credentials(registry: str, credentials: Credentials | None) -> None:
    """Use ``credentials`` for ``registry`` in this process (over the environment and docker
    config; a Secret block named in a run's parameters still wins). None forgets them."""
    with _lock:
        if credentials is None:
            _state.given.pop(registry, None)
        else:
            _state.given[registry] = credentials


def given_credentials(registry: str) -> Credentials | None:
    with _lock:
        return _state.given.get(registry)


# -- registry endpoints and clients --------------------------------------------------------------
def register_endpoint(
    registry: str, *, credentials: Credentials | None = None, tls: TLSOptions | None = None
) -> None:
    """Remember how to reach ``registry``; replaces an earlier registration (and its client)."""
    endpoint = Endpoint(registry, credentials, tls or TLSOptions())
    with _lock:
        if _state.endpoints.get(registry) == endpoint:
            return
        _state.endpoints[registry] = endpoint
        old = _state.clients.pop(registry, None)
    if old is not None:
        old.close()


def client_for(registry: str) -> RegistryClient:
    """The shared client of ``registry`` (anonymous over HTTPS when never registered)."""
    with _lock:
        client = _state.clients.get(registry)
        if client is None:
            endpoint = _state.endpoints.get(registry) or Endpoint(registry, None, TLSOptions())
            client = RegistryClient(registry, credentials=endpoint.credentials, tls=endpoint.tls)
            _state.clients[registry] = client
        return client


def close_clients() -> None:
    """Close every registry client (their endpoints stay registered)."""
    with _lock:
        clients = list(_state.clients.values())
        _state.clients.clear()
    for client in clients:
        client.close()


# -- S3 ------------------------------------------------------------------------------------------
def set_s3_credentials(key: str, credentials: Any) -> None:
    """Credentials (from a Secret block, or None for the AWS chain) of the S3 settings ``key``;
    drops a client built with earlier ones."""
    with _lock:
        _state.s3_credentials[key] = credentials
        _state.s3_clients.pop(key, None)


def s3_client(key: str, make: Callable[[Any], Any]) -> Any:
    """The shared boto3 client of the S3 settings ``key``; ``make(credentials)`` builds it
    once (boto3 clients are thread-safe)."""
    with _lock:
        client = _state.s3_clients.get(key)
        if client is None:
            client = make(_state.s3_credentials.get(key))
            _state.s3_clients[key] = client
        return client


# -- blobs ---------------------------------------------------------------------------------------
def blob_store(root: Path) -> BlobStore:
    """The one store object of ``root`` in this process. A store whose directory was removed
    since (a finished pull's working dir) starts afresh."""
    key = str(Path(root).resolve())
    with _lock:
        store = _state.blob_stores.get(key)
        if store is None or not store.root.joinpath("sha256").is_dir():
            store = _state.blob_stores[key] = BlobStore(Path(key))
        return store


def forget_blob_store(root: Path) -> None:
    """Drop the store object of ``root`` (its directory is being removed)."""
    with _lock:
        _state.blob_stores.pop(str(Path(root).resolve()), None)


def blob_locations(registry: str) -> BlobLocations:
    """Blobs known to be in the target ``registry`` (cross-repository mount sources)."""
    with _lock:
        return _state.blob_locations.setdefault(registry, BlobLocations())


def checked_files() -> CheckedFiles:
    """Archives of this process already found to match their checksum sidecars."""
    return _state.checked_files


# -- stop request --------------------------------------------------------------------------------
def request_stop() -> None:
    _state.stop.set()


def stop_requested() -> bool:
    return _state.stop.is_set()


# -- what the source answered during a run ------------------------------------------------------
def open_source_answers(run: str) -> None:
    """Fresh answers for the pull run ``run`` (a flow run id): its flow calls this as it
    starts, so a retried run asks the source again."""
    with _lock:
        _state.answers[run] = SourceAnswers()


def close_source_answers(run: str) -> None:
    with _lock:
        _state.answers.pop(run, None)


def open_used_blobs(run: str) -> UsedBlobs:
    """A fresh record of the digests pull run ``run`` reads from or puts in its blob store
    (what its cache gc keeps besides its layouts' blobs); its fetchers add to it."""
    with _lock:
        used = _state.used_blobs[run] = UsedBlobs()
        return used


def close_used_blobs(run: str) -> None:
    with _lock:
        _state.used_blobs.pop(run, None)


def used_blobs(run: str | None) -> UsedBlobs | None:
    """The record of pull run ``run`` (None: not opened, e.g. a task run on its own)."""
    if run is None:
        return None
    with _lock:
        return _state.used_blobs.get(run)


def source_answers(run: str | None) -> SourceAnswers | None:
    """The answers of pull run ``run`` (None: not opened, e.g. a task run on its own)."""
    if run is None:
        return None
    with _lock:
        return _state.answers.get(run)


# -- the base receipt of a delta pull -------------------------------------------------------------
def base_blobs(run: str | None, path: str, sha256: str) -> BaseBlobs:
    """The blobs of the receipt at ``path`` for pull run ``run``, read (and verified against
    its sidecar) once per run; SealedFileError when it is no longer the receipt of SHA-256
    ``sha256`` the run started from."""
    key = (run, str(Path(path).resolve()), sha256)
    with _lock:
        found = _state.delta_bases.get(key)
    if found is not None:
        return found
    receipt, actual = read_receipt(Path(path))
    if actual != sha256:
        raise SealedFileError(
            f"receipt {path} changed during the pull (SHA-256 {actual}, the run started from "
            f"{sha256}); run the pull again"
        )
    with _lock:
        return _state.delta_bases.setdefault(key, BaseBlobs(receipt.blobs, sha256))


def forget_base_blobs(run: str | None) -> None:
    """Drop what pull run ``run`` kept of its base receipt (the run is over)."""
    with _lock:
        for key in [k for k in _state.delta_bases if k[0] == run]:
            del _state.delta_bases[key]


# -- push layouts planned ahead ------------------------------------------------------------------
def keep_layout_plans(plans: dict[tuple[str, str], Any]) -> None:
    """The push's layout plans, made once by its unpack step (by job directory and layout),
    replacing any earlier push's."""
    with _lock:
        _state.layout_plans = dict(plans)


def take_layout_plan(key: tuple[str, str]) -> Any:
    """The plan kept for ``key`` (None: none kept); handed out once."""
    with _lock:
        return _state.layout_plans.pop(key, None)


# -- progress ------------------------------------------------------------------------------------
def open_progress(operation: str) -> Progress:
    """A fresh :class:`Progress` for ``operation`` (pull, push, upload, download), current from
    now on: the flow that runs it calls this first."""
    progress = Progress(operation)
    with _lock:
        _state.progress = progress
    return progress


def current_progress() -> Progress | None:
    """The progress of the operation running now (None before any flow opened one)."""
    return _state.progress


def progress_for(operation: str) -> Progress:
    """The current progress when it is ``operation``'s, else a fresh one that is not current
    (a task run on its own, e.g. a Retry, reports to something)."""
    progress = _state.progress
    return (
        progress
        if progress is not None and progress.operation == operation
        else Progress(operation)
    )


# -- tests ---------------------------------------------------------------------------------------
def reset() -> None:
    """Close every client and forget all process state (tests, between runs)."""
    global _state
    close_clients()
    with _lock:
        _state = _State()
