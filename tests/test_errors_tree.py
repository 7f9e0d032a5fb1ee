"""Every exception class the product defines joins the error tree of :mod:`d8mirror.errors`
(the CLI prints a :class:`MirrorError` as a one-line error, anything else as a traceback), and
each flow's end-of-run failure is a :class:`RunFailed`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest

from d8mirror.errors import (
    ChildRunFailed,
    MirrorError,
    PullFailed,
    PushFailed,
    RunFailed,
    TransferFailed,
)

PRODUCT_PACKAGES = ("d8mirror", "tasks", "flows", "app")

#: Control flow, not errors: raised and caught inside the product, never out of a run.
INTERNAL = {
    # d8mirror.push.pusher: a stop request during one layout; tasks.push turns it into the
    # layout's "cancelled" result.
    "d8mirror.push.pusher.LayoutPushCancelled",
}


def _product_modules() -> Iterator[str]:
    for name in PRODUCT_PACKAGES:
        package = importlib.import_module(name)
        yield name
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if ".testbed" not in info.name:  # the test bed is not product code
                yield info.name


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for module_name in _product_modules():
        module = importlib.import_module(module_name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module_name:
                found.append(obj)
    return found


def test_every_product_exception_is_a_mirror_error() -> None:
    classes = _exception_classes()
    assert len(classes) > 30  # the walk did find the tree
    outside = [
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if not issubclass(c, MirrorError) and f"{c.__module__}.{c.__qualname__}" not in INTERNAL
    ]
    assert outside == []


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        ("flows.pull", "PullFailed", PullFailed),
        ("flows.push", "PushFailed", PushFailed),
        ("flows.transfer", "TransferFailed", TransferFailed),
        ("tasks.pull", "ChildRunFailed", ChildRunFailed),
    ],
)
def test_flow_failures_are_the_error_tree_s_run_failed(
    module: str, name: str, expected: type[RunFailed]
) -> None:
    assert getattr(importlib.import_module(module), name) is expected
    assert issubclass(expected, RunFailed)
