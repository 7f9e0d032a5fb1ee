"""Single-host operation: one long-running process serves every d8mirror deployment, no work
pool or worker needed (``python -m deployments.serve`` from the project root).

Deployments (flow/deployment):

    mirror-pull/mirror-packages    nightly cron; concurrency 1 (a new run is cancelled)
    mirror-package/mirror-package  one package into an existing bundle dir (manual, UI form)
    mirror-push/push-bundle        bundle into the air-gapped registry (manual or automation)
    upload-bundle/upload-bundle    bundle to S3 / an OCI artifact (manual or automation)
    mirror-scaleout/mirror-scaleout  per-package child runs of mirror-package (see flows.scaleout)

Defaults come from the environment (no credential ever does: those are Secret blocks named in
parameters, or D8_MIRROR_* / AWS variables of this process):

    D8MIRROR_BUNDLE_DIR   bundle directory           (/var/lib/d8mirror/bundle)
    D8MIRROR_CACHE_DIR    kept working dir and blob cache, the pulls' tmp_dir
                          (/var/lib/d8mirror/cache; "" = none: every run starts cold and
                          removes its BUNDLE_DIR/.tmp when it succeeds)
    D8MIRROR_SOURCE       source edition repository  (registry.deckhouse.ru/deckhouse/ee)
    D8MIRROR_TARGET       push target repository     (registry.local:5000/deckhouse/ee)
    D8MIRROR_UPLOAD_URL   upload target              (s3://d8mirror/bundle)
    D8MIRROR_CRON         nightly schedule, "" = none ("0 2 * * *"), D8MIRROR_TIMEZONE (UTC)
    D8MIRROR_PULL_PARAMS  JSON object merged into the pull defaults, e.g. {"insecure": true}
    D8MIRROR_SERVE_LIMIT  flow runs executed at once by this process (4)
    D8MIRROR_STATE_DIR    if set and PREFECT_RESULTS_LOCAL_STORAGE_PATH is not: results and
                          cache records go to <dir>/results (they must outlive the process,
                          or a Retry re-fetches everything)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

DEFAULT_CRON = "0 2 * * *"


def _setting(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None else value


def pull_defaults(env: Mapping[str, str]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "bundle_dir": _setting(env, "D8MIRROR_BUNDLE_DIR", "/var/lib/d8mirror/bundle"),
        "source": _setting(env, "D8MIRROR_SOURCE", "registry.deckhouse.ru/deckhouse/ee"),
    }
    cache = _setting(env, "D8MIRROR_CACHE_DIR", "/var/lib/d8mirror/cache")
    if cache:  # nightly runs reuse their blobs; a successful run would remove BUNDLE_DIR/.tmp
        defaults["tmp_dir"] = cache
    defaults.update(json.loads(env.get("D8MIRROR_PULL_PARAMS") or "{}"))
    return defaults


def build_deployments(env: Mapping[str, str] | None = None) -> list[Any]:
    """The RunnerDeployments served by this module (Prefect imported here, after env setup)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.pull import mirror_package, mirror_pull
    from flows.push import mirror_push
    from flows.scaleout import mirror_scaleout
    from flows.transfer import upload_bundle

    env = os.environ if env is None else env
    pull = pull_defaults(env)
    cron = _setting(env, "D8MIRROR_CRON", DEFAULT_CRON)
    timezone = _setting(env, "D8MIRROR_TIMEZONE", "UTC")
    bundle = pull["bundle_dir"]
    schedule: dict[str, Any] = {}
    if cron:
        from prefect.schedules import Cron

        schedule = {"schedules": [Cron(cron, timezone=timezone)]}
    tags = ["d8mirror"]
    return [
        mirror_pull.to_deployment(
            name="mirror-packages",
            tags=tags,
            parameters={"params": pull},
            description="Nightly: every package of the source into the bundle directory.",
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            **schedule,
        ),
        mirror_package.to_deployment(
            name="mirror-package",
            tags=tags,
            parameters={"params": {**pull, "package": "console"}},
            description="(Re-)fetch one package into an existing bundle directory.",
        ),
        mirror_push.to_deployment(
            name="push-bundle",
            tags=tags,
            parameters={
                "params": {
                    "bundle_dir": bundle,
                    "registry": _setting(
                        env, "D8MIRROR_TARGET", "registry.local:5000/deckhouse/ee"
                    ),
                }
            },
            description="Push a bundle into the air-gapped registry.",
        ),
        upload_bundle.to_deployment(
            name="upload-bundle",
            tags=tags,
            parameters={
                "params": {
                    "bundle_dir": bundle,
                    "url": _setting(env, "D8MIRROR_UPLOAD_URL", "s3://d8mirror/bundle"),
                }
            },
            description="Upload a bundle to S3 or an OCI artifact.",
        ),
        mirror_scaleout.to_deployment(
            name="mirror-scaleout",
            tags=tags,
            parameters={"params": pull},
            description="Fan out one mirror-package flow run per package.",
        ),
    ]


def main() -> None:
    for key, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1")):
        os.environ.setdefault(key, value)
    state = os.environ.get("D8MIRROR_STATE_DIR")
    if state:
        os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", os.path.join(state, "results"))
    from prefect import serve

    serve(*build_deployments(), limit=int(os.environ.get("D8MIRROR_SERVE_LIMIT") or 4))


if __name__ == "__main__":
    main()
