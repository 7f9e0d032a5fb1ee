"""README flags and rules end to end through the CLI or the flow, against real registries:
``--skip-vex-images``, ``--exclude-package``, ``--no-packages``, ``--packages-path-suffix`` (pull
and push), push ``--file``, ``MIRROR_BYPASS_ACCESS_CHECKS``, ``SSL_CERT_FILE``, ``pull -c`` then
``push``, ``--proxy-registry`` through the flow, and the retry rule "401, 403, 404 fail at once"
(core and Prefect task alike)."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Request, Response
from push_bundle_builder import PackageSpec as HandSpec
from push_bundle_builder import build_bundle

from app.main import main
from d8mirror.mediatypes import ANNOTATION_SHORT_TAG
from testbed.registry_server import RegistryServer
from testbed.seed import PackageSpec, SeededContent, SeedSpec, seed_packages

pytestmark = pytest.mark.usefixtures("prefect_server")

DEMO = "deckhouse/ee"
_ns = itertools.count()


def _tags(tar_path: Path, layout: str) -> dict[str, str]:
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile(f"{layout}/index.json")
        assert member is not None
        return {
            m["annotations"][ANNOTATION_SHORT_TAG]: m["digest"]
            for m in json.load(member)["manifests"]
        }


def _archives(bundle: Path) -> list[str]:
    return sorted(p.name for p in bundle.glob("*.tar"))


def _pull(registry: RegistryServer, bundle: Path, *flags: str, root: str = DEMO) -> int:
    return main(["pull", str(bundle), "--source", f"{registry.host}/{root}", "--insecure", *flags])


def _target_tags(server: RegistryServer, root: str) -> dict[str, str]:
    with server.client() as client:
        return {
            f"{repo[len(root) + 1 :]}:{tag}": client.head_manifest(repo, tag).digest
            for repo in client.list_repositories()
            if repo.startswith(root + "/")
            for tag in client.list_tags(repo)
        }


# -- pull filters ------------------------------------------------------------------------------


def test_exclude_package_and_skip_vex_images(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    assert (
        _pull(
            registry,
            bundle,
            "--exclude-package",
            "code",
            "--exclude-package",
            "stronghold",
            "--skip-vex-images",
        )
        == 0
    )
    assert _archives(bundle) == ["package-console.tar", "package-versions.tar"]
    tags = _tags(bundle / "package-console.tar", "packages/console")
    assert "v1.1.0" in tags  # its VEX v1.1.0.att is seeded
    assert not [t for t in tags if t.endswith(".att")]


def test_no_packages_writes_only_package_versions(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    assert _pull(registry, bundle, "--no-packages") == 0
    assert _archives(bundle) == ["package-versions.tar"]
    with tarfile.open(bundle / "package-versions.tar") as tar:
        layouts = {n.split("/")[1] for n in tar.getnames() if n.endswith("/version/index.json")}
    assert layouts == {"code", "console", "stronghold"}


# -- path suffixes ------------------------------------------------------------------------------


def test_packages_path_suffix_on_pull_and_push(
    registry: RegistryServer, registry2: RegistryServer, tmp_path: Path
) -> None:
    """Source packages live at ``claims/sfx/packages`` (pulled as root ``claims/sfx/packages``
    with suffix ``/``); pushed under ``<target>/mirror``."""
    spec = SeedSpec(
        seed=16,
        payload_size=4 << 10,
        packages=(
            PackageSpec("suffixed", ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0),
        ),
    )
    with registry.client() as client:
        content = seed_packages(client, "claims/sfx", spec, tmp_path / "images")
    bundle = tmp_path / "bundle"
    assert _pull(registry, bundle, "--packages-path-suffix", "/", root="claims/sfx/packages") == 0
    assert _tags(bundle / "package-suffixed.tar", "packages/suffixed")["v1.0.0"] == content.digest(
        "claims/sfx/packages/suffixed:v1.0.0"
    )
    root = f"sfx-{next(_ns)}/ee"
    assert (
        main(
            [
                "push",
                str(bundle),
                f"{registry2.host}/{root}",
                "--insecure",
                "--packages-path-suffix",
                "/mirror",
            ]
        )
        == 0
    )
    pushed = _target_tags(registry2, root)
    assert pushed["mirror/suffixed:v1.0.0"] == content.digest("claims/sfx/packages/suffixed:v1.0.0")
    assert "mirror/suffixed/version:stable" in pushed
    assert not [ref for ref in pushed if ref.startswith("packages/")]


# -- push inputs and pre-flight -----------------------------------------------------------------


def test_push_file_pushes_only_the_named_archives(
    registry2: RegistryServer, tmp_path: Path
) -> None:
    bundle, expected = build_bundle(tmp_path, [HandSpec("console"), HandSpec("viewer")])
    root = f"file-{next(_ns)}/ee"
    assert (
        main(
            [
                "push",
                f"{registry2.host}/{root}",
                "--insecure",
                "--file",
                str(bundle / "package-console.tar"),
                "--file",
                str(bundle / "package-versions.tar"),
            ]
        )
        == 0
    )
    pushed = _target_tags(registry2, root)
    for (repo, tag), digest in expected.tags.items():
        if repo.startswith("packages/console"):
            assert pushed[f"{repo}:{tag}"] == digest  # main, version/ and extra/
    # of viewer, only its release images (they are in package-versions.tar)
    assert not [
        ref for ref in pushed if ref.startswith(("packages/viewer:", "packages/viewer/extra"))
    ]
    assert (
        pushed["packages/viewer/version:stable"]
        == expected.tags[("packages/viewer/version", "stable")]
    )


def test_bypass_access_checks_skips_the_write_check(
    registry2: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target accepts writes to the bundle's own repositories only (a registry where the
    pre-flight's probe at the root path is refused): the push fails unless the check is
    bypassed."""
    bundle, expected = build_bundle(tmp_path, [HandSpec("console")])
    root = f"bypass-{next(_ns)}/ee"
    allowed = {f"/v2/{root}/{repo}/manifests/{tag}" for repo, tag in expected.tags}

    def bundle_tags_only(request: Request) -> Response | None:
        tagged = "/manifests/" in request.path and "/manifests/sha256:" not in request.path
        if request.method == "PUT" and tagged and request.path not in allowed:
            return Response.error(403, "DENIED")
        if request.method == "POST" and request.path.startswith(f"/v2/{root}/blobs/uploads"):
            return Response.error(403, "DENIED")  # the write check's upload session
        return None

    with FaultProxy(registry2.host, intercept=bundle_tags_only) as proxy:
        target = f"{proxy.host}/{root}"
        monkeypatch.delenv("MIRROR_BYPASS_ACCESS_CHECKS", raising=False)
        assert main(["push", str(bundle), target, "--insecure"]) != 0
        monkeypatch.setenv("MIRROR_BYPASS_ACCESS_CHECKS", "1")
        assert main(["push", str(bundle), target, "--insecure"]) == 0
    pushed = _target_tags(registry2, root)
    assert pushed["packages/console:v1.0.0"] == expected.tags[("packages/console", "v1.0.0")]


# -- TLS trust from the environment --------------------------------------------------------------


def test_ssl_cert_file_is_trusted_by_pull_and_push(
    tls_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_registry.ca_file
    spec = SeedSpec(
        seed=17,
        payload_size=4 << 10,
        packages=(
            PackageSpec("trusted", ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0),
        ),
    )
    with tls_registry.client() as client:
        seed_packages(client, "claims/tls", spec, tmp_path / "images")
    creds = ["--source-login", "testuser", "--source-password", "testpass"]
    pull = ["pull", "--source", f"{tls_registry.host}/claims/tls", *creds]
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert main([pull[0], str(tmp_path / "untrusted"), *pull[1:]]) == 1
    monkeypatch.setenv("SSL_CERT_FILE", tls_registry.ca_file)
    bundle = tmp_path / "bundle"
    assert main([pull[0], str(bundle), *pull[1:]]) == 0
    assert "package-trusted.tar" in _archives(bundle)
    assert (
        main(
            [
                "push",
                str(bundle),
                f"{tls_registry.host}/tls-pushed/ee",
                "-u",
                "testuser",
                "-p",
                "testpass",
            ]
        )
        == 0
    )
    assert "packages/trusted:v1.0.0" in _target_tags(tls_registry, "tls-pushed/ee")


# -- chunks -----------------------------------------------------------------------------------


def test_chunked_pull_then_push_through_the_cli(
    registry: RegistryServer, registry2: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    assert _pull(registry, bundle, "--include-package", "code", "-c", "100KiB") == 0
    assert not list(bundle.glob("*.tar")) and list(bundle.glob("package-code.tar.*.chunk"))
    root = f"chunked-{next(_ns)}/ee"
    assert main(["push", str(bundle), f"{registry2.host}/{root}", "--insecure"]) == 0
    pushed = _target_tags(registry2, root)
    for tag in ("v1.7.0", "v1.6.2", "v1.6.1"):
        assert pushed[f"packages/code:{tag}"] == demo_content.digest(f"{DEMO}/packages/code:{tag}")
    assert pushed["packages/code/version:lts"] == demo_content.digest(
        f"{DEMO}/packages/code/version:lts"
    )


# -- proxy registry ------------------------------------------------------------------------------


def test_proxy_registry_pulls_without_listing_anything(
    registry: RegistryServer, demo_content: SeededContent, tmp_path: Path
) -> None:
    """A pull-through cache that cannot list tags or the catalog: the flow probes tags."""
    from flows.pull import run_pull
    from tasks.models import PullParameters

    def no_listing(request: Request) -> Response | None:
        if request.path.endswith("/tags/list") or request.path.startswith("/v2/_catalog"):
            return Response.error(404, "NAME_UNKNOWN")
        return None

    bundle = tmp_path / "bundle"
    with FaultProxy(registry.host, intercept=no_listing) as proxy:
        run_pull(
            PullParameters(
                bundle_dir=str(bundle),
                source=f"{proxy.host}/{DEMO}",
                insecure=True,
                proxy_registry=True,
                include_packages=["console@~1.1.0"],
            )
        )
        # neither the catalog nor the package's tags are listed; only the
        # package-versions phase still tries <name>/version, tolerating the refusal
        listed = [p for m, p in proxy.seen if p.endswith("/tags/list")]
        assert listed == [f"/v2/{DEMO}/packages/console/version/tags/list"]
    tags = _tags(bundle / "package-console.tar", "packages/console")
    assert tags["v1.1.0"] == demo_content.digest(f"{DEMO}/packages/console:v1.1.0")


# -- retry rule ---------------------------------------------------------------------------------


def _task_run_counts(prefix: str) -> dict[str, int]:
    """run_count of the latest task run of each name starting with ``prefix``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    found: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix)),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )
    for run in runs:
        found.setdefault(run.name, run.run_count)
    return found


def test_401_403_404_fail_at_once_without_any_retry(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """One blob per package answers 401, 403 or 404 (for good): no request is retried (the
    blob is asked for at most three times: the pull's sizing fetching the main image, its
    prefetch, then its fetch), no Prefect task runs twice, and each package fails."""
    from flows.pull import PullFailed, run_pull
    from tasks.models import PullParameters

    names = {"p401": 401, "p403": 403, "p404": 404}
    spec = SeedSpec(
        seed=18,
        payload_size=4 << 10,
        packages=tuple(
            PackageSpec(name, ("v1.0.0",), channels={"stable": "v1.0.0"}, internal_images=0)
            for name in names
        ),
    )
    root = "claims/retry"
    with registry.client() as client:
        seed_packages(client, root, spec, tmp_path / "images")
        layers = {
            name: client.get_manifest(f"{root}/packages/{name}", "v1.0.0").json()["layers"][-1][
                "digest"
            ]
            for name in names
        }
    paths = {
        f"/v2/{root}/packages/{name}/blobs/{layers[name]}": status for name, status in names.items()
    }
    codes = {401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN"}

    def refuse(request: Request) -> Response | None:
        status = paths.get(request.path)
        return Response.error(status, codes[status]) if status else None

    bundle = tmp_path / "bundle"
    with FaultProxy(registry.host, intercept=refuse) as proxy:
        with pytest.raises(PullFailed):
            run_pull(
                PullParameters(
                    bundle_dir=str(bundle),
                    source=f"{proxy.host}/{root}",
                    insecure=True,
                    concurrency=3,
                )
            )
        asked = {path: proxy.count("GET", path) for path in paths}
    assert all(1 <= count <= 3 for count in asked.values()), asked
    assert _task_run_counts("fetch-p40") == {f"fetch-{name}": 1 for name in names}
    sizing = _task_run_counts("size-pull")  # the run's sizing tasks (lower bound, exact)
    assert sizing and set(sizing.values()) == {1}, sizing
    report = json.loads((bundle / "report.json").read_text())
    assert sorted(report["failed"]) == sorted(names)
