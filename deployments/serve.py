"""Single-host operation: one long-running process serves every d8mirror deployment, no work
pool or worker needed (``python -m deployments.serve`` from the project root).

Deployments (flow/deployment):

    mirror-pull/mirror-packages    nightly cron; concurrency 1 (a new run is cancelled)
    mirror-package/mirror-package  one package into an existing bundle dir (manual, UI form)
    mirror-push/push-bundle        bundle into the air-gapped registry (manual or automation)
    upload-bundle/upload-bundle    bundle to S3 / an OCI artifact (manual or automation)
    mirror-scaleout/mirror-scaleout  per-package child runs of mirror-package (see flows.scaleout)
    mirror-pull/mirror-packages-delta  outside: pull against the site's receipt, upload the delta
                                   under its id (schedule: D8MIRROR_DELTA_CRON, default none)
    import-bundle/import-bundle    inside: import pending uploads, write and upload the receipt
                                   (schedule: D8MIRROR_IMPORT_CRON, default none)

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
    D8MIRROR_DELTA_FROM   the site's latest receipt  (s3://d8mirror/site/receipt.json)
    D8MIRROR_DELTA_BUNDLE_DIR  delta bundle directory (/var/lib/d8mirror/delta)
    D8MIRROR_DELTA_UPLOAD_URL  where each delta goes   (s3://d8mirror/deltas/{bundle_id})
    D8MIRROR_DELTA_CRON   nightly delta schedule, "" = none (the default: turn it on instead
                          of D8MIRROR_CRON once the site sends receipts)
    D8MIRROR_IMPORT_SOURCE  uploads to import       (s3://d8mirror/deltas)
    D8MIRROR_RECEIPT      the site's receipt        (/var/lib/d8mirror/site/receipt.json)
    D8MIRROR_RECEIPT_UPLOAD_URL  where it goes out  (s3://d8mirror/site/receipt.json; "" = kept)
    D8MIRROR_IMPORT_CRON  import schedule, "" = none (the default), e.g. "15 * * * *" hourly
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


def _schedule(env: Mapping[str, str], name: str, default: str) -> dict[str, Any]:
    """``schedules=[Cron(...)]`` from the variable ``name`` ("" = no schedule)."""
    cron = _setting(env, name, default)
    if not cron:
        return {}
    from prefect.schedules import Cron

    return {"schedules": [Cron(cron, timezone=_setting(env, "D8MIRROR_TIMEZONE", "UTC"))]}


def delta_defaults(env: Mapping[str, str], pull: dict[str, Any]) -> dict[str, Any]:
    """The nightly delta pull: the pull defaults, against the site's receipt, uploaded under
    the delta's id."""
    return {
        **pull,
        "bundle_dir": _setting(env, "D8MIRROR_DELTA_BUNDLE_DIR", "/var/lib/d8mirror/delta"),
        "delta_from": _setting(env, "D8MIRROR_DELTA_FROM", "s3://d8mirror/site/receipt.json"),
        "upload": {
            "url": _setting(env, "D8MIRROR_DELTA_UPLOAD_URL", "s3://d8mirror/deltas/{bundle_id}")
        },
    }


def import_defaults(env: Mapping[str, str]) -> dict[str, Any]:
    """The import inside the air gap: pending uploads into the target, the receipt back out."""
    return {
        "source": _setting(env, "D8MIRROR_IMPORT_SOURCE", "s3://d8mirror/deltas"),
        "registry": _setting(env, "D8MIRROR_TARGET", "registry.local:5000/deckhouse/ee"),
        "receipt": _setting(env, "D8MIRROR_RECEIPT", "/var/lib/d8mirror/site/receipt.json"),
        "receipt_upload_to": _setting(
            env, "D8MIRROR_RECEIPT_UPLOAD_URL", "s3://d8mirror/site/receipt.json"
        )
        or None,
    }


def build_deployments(env: Mapping[str, str] | None = None) -> list[Any]:
    """The RunnerDeployments served by this module (Prefect imported here, after env setup)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.importing import import_bundle
    from flows.pull import mirror_package, mirror_pull
    from flows.push import mirror_push
    from flows.scaleout import mirror_scaleout
    from flows.transfer import upload_bundle

    env = os.environ if env is None else env
    pull = pull_defaults(env)
    bundle = pull["bundle_dir"]
    tags = ["d8mirror"]
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return [
        mirror_pull.to_deployment(
            name="mirror-packages",
            tags=tags,
            parameters={"params": pull},
            description="Nightly: every package of the source into the bundle directory.",
            concurrency_limit=one_at_a_time,
            **_schedule(env, "D8MIRROR_CRON", DEFAULT_CRON),
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
        mirror_pull.to_deployment(
            name="mirror-packages-delta",
            tags=tags,
            parameters={"params": delta_defaults(env, pull)},
            description="Nightly delta: pull against the site's receipt, upload it under its id.",
            concurrency_limit=one_at_a_time,
            **_schedule(env, "D8MIRROR_DELTA_CRON", ""),
        ),
        import_bundle.to_deployment(
            name="import-bundle",
            tags=tags,
            parameters={"params": import_defaults(env)},
            description="Inside: import pending uploads (by id, oldest first), write and "
            "upload the receipt.",
            concurrency_limit=one_at_a_time,
            **_schedule(env, "D8MIRROR_IMPORT_CRON", ""),
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
