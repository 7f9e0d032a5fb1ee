"""d8mirror.diagnostics and app.console as units: categories by type along the ``raise ... from``
chain, where from the errors' fields, failed items, and the console's filtering of records."""

from __future__ import annotations

import logging

from app.console import QuietEngine, ToldTracebacks, render_error
from d8mirror import errors as e
from d8mirror.diagnostics import category_of_text, diagnose, is_expected
from d8mirror.pull.discovery import DiscoveryError


def _raised(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as caught:
        return caught


def test_the_innermost_typed_error_decides_the_category() -> None:
    network = e.RegistryNetworkError(
        "connection to r:5000 failed: GET http://r:5000/v2/a/b/tags/list: refused",
        url="http://r:5000/v2/a/b/tags/list",
    )
    exc = _raised(DiscoveryError(f"validate packages access: list a/b: {network}"), network)
    told = diagnose(exc)
    assert told.category == "registry unreachable"
    assert told.what == "validate packages access: list a/b"
    assert told.cause == str(network)
    assert told.where == (("registry", "r:5000"), ("repository", "a/b"))
    assert told.hints


def test_categories_of_the_tree() -> None:
    cases = {
        e.UnauthorizedError("x"): "authentication failed",
        e.DeniedError("x"): "access denied",
        e.TLSError("x"): "TLS verification failed",
        e.BlobNotFoundError("x"): "not found",
        e.PathNotFoundError("x", path="/b"): "not found",
        e.DiskSpaceError("/b/x.tar"): "disk full",
        e.BundleError("x"): "corrupt bundle",
        e.LocalContentError("x"): "corrupt bundle",
        e.ConfigError("x"): "invalid configuration",
        e.PushFailed("x"): "run failed",
        e.MirrorError("x"): "failed",
    }
    assert {type(k).__name__: diagnose(k).category for k in cases} == {
        type(k).__name__: v for k, v in cases.items()
    }
    assert ("file", "/b/x.tar") in diagnose(e.DiskSpaceError("/b/x.tar")).where
    assert ("file", "/b") in diagnose(e.PathNotFoundError("x", path="/b")).where
    leaky = e.ServerError("x", url="https://user:secret@r.example:5000/v2/a/manifests/v1")
    assert diagnose(leaky).where == (("registry", "r.example:5000"), ("repository", "a"))


def test_a_run_whose_items_failed_for_one_reason_is_told_as_that_reason() -> None:
    items = [("a", "BlobNotFoundError: blob unknown"), ("b", "ManifestNotFoundError: gone")]
    told = diagnose(e.PullFailed("failed packages: a, b"), items)
    assert told.category == "not found" and told.items == tuple(items)
    mixed = diagnose(e.PullFailed("failed packages: a, b"), [*items[:1], ("b", "TLSError: x")])
    assert mixed.category == "run failed"
    assert category_of_text("RuntimeError: boom") is None


def test_expected_means_in_the_tree_or_raised_from_it() -> None:
    assert is_expected(e.DeniedError("x"))
    assert is_expected(_raised(RuntimeError("wrapped"), e.DeniedError("x")))
    assert not is_expected(RuntimeError("bug"))
    assert not is_expected(_raised(KeyError("k"), ValueError("v")))


def test_the_block_has_category_where_cause_items_hints() -> None:
    text = render_error(e.PullFailed("failed packages: a"), [("a", "DiskSpaceError: full\n at x")])
    lines = text.splitlines()
    assert lines[0] == "error: disk full"
    assert "  failed: a: DiskSpaceError: full at x" in lines
    assert any(line.startswith("  hint: ") and "--tmp-dir" in line for line in lines)


def _record(
    exc: BaseException | None, *, level: int = logging.ERROR, path: str
) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("prefect.flow_runs", level, path, 1, "it failed", None, info)


def _with_traceback(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_the_console_drops_the_traceback_of_expected_errors_only() -> None:
    formatter = ToldTracebacks(logging.Formatter("%(message)s"))
    expected = _record(_with_traceback(e.DeniedError("no")), path="/x/tasks/a.py")
    assert formatter.format(expected) == "it failed"
    assert expected.exc_info is not None  # the record the API handler sees is untouched
    assert "Traceback" in logging.Formatter().format(expected)
    bug = _record(_with_traceback(RuntimeError("bug")), path="/x/tasks/a.py")
    assert "Traceback" in formatter.format(bug)


def test_on_a_tty_prefects_own_info_and_expected_error_records_are_left_out() -> None:
    quiet = QuietEngine("/site/prefect/")
    engine = "/site/prefect/task_engine.py"
    assert not quiet.filter(_record(None, level=logging.INFO, path=engine))
    assert quiet.filter(_record(None, level=logging.WARNING, path=engine))
    assert quiet.filter(_record(None, level=logging.ERROR, path=engine))
    assert not quiet.filter(_record(_with_traceback(e.DeniedError("x")), path=engine))
    assert quiet.filter(_record(_with_traceback(RuntimeError("bug")), path=engine))
    assert quiet.filter(_record(None, level=logging.INFO, path="/repo/flows/pull.py"))


def test_a_failed_runs_items_survive_pickling() -> None:
    """Prefect keeps a failed state's exception by pickling it: its items must survive."""
    import pickle

    failed = e.PushFailed("push failed; failed layouts: a", items=[("a", "DeniedError: no")])
    back = pickle.loads(pickle.dumps(failed))
    assert isinstance(back, e.PushFailed) and back.items == (("a", "DeniedError: no"),)
    assert str(back) == str(failed)
    assert diagnose(back, back.items).category == "access denied"
