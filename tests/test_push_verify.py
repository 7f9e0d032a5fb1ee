"""A pull's bundle is checked against its own checksum sidecars before anything is pushed."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.registry_server import RegistryServer
from testbed.seed import SeededContent

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.parametrize("damage", ["flipped-byte", "truncated"])
def test_corrupt_archive_is_refused_before_any_upload(
    registry: RegistryServer,
    registry2: RegistryServer,
    demo_content: SeededContent,
    tmp_path: Path,
    damage: str,
) -> None:
    from flows.pull import run_pull
    from flows.push import run_push
    from tasks.models import PullParameters
    from tasks.push import PushParameters

    bundle = tmp_path / "bundle"
    run_pull(
        PullParameters(
            bundle_dir=str(bundle),
            source=f"{registry.host}/deckhouse/ee",
            insecure=True,
            include_packages=["code"],
        )
    )
    archive = bundle / "package-code.tar"
    data = bytearray(archive.read_bytes())
    if damage == "truncated":  # the unpack fails too: the checksum names why
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    registry2.clear_requests()
    params = PushParameters(
        bundle_dir=str(bundle), registry=f"{registry2.host}/corrupt/ee", insecure=True
    )
    with pytest.raises(Exception, match=r"corrupt bundle: .*package-code\.tar"):
        run_push(params)
    assert registry2.count("PUT", "/corrupt/ee/packages") == 0
    assert registry2.count("POST", "/corrupt/ee/packages") == 0
