"""Push: unpack bundle archives into one tree and push every layout into a target registry.

Modules (one concept each)::

    stages           the stages mirror-push runs, typed: check_bundle, prepare_push_tree,
                     push_layout (one LayoutJob), finish_push, push_result
    unified          unpack archives (sorted) into one tree; large blobs of plain tars stay in
                     the archive (spans file in the tree)
    index_merge      index.json merge of the unpack, with Q2 provenance
    short_tags       which descriptor each short tag of a layout pushes
    routing          layout path == registry path; packages/modules path-suffix remaps
    blobsource       a layout's blobs: its files, else their spans in plain tar archives
    pusher           push one layout: blobs HEAD-first (mount, upload), manifests byte-exact
    tinyimage        a deterministic tiny image (discovery tags)
    discovery_tags   ``<registry>/<packages path>:<name>`` for every package in the tree
    access           the write check of R-8.6 (an upload session opened and cancelled)
    verify           every pushed (repository, tag) resolves to the bundle's digest
    summary          the push summary text and the typed result
    blobs            where a blob already is in the target (cross-repository mounts)
    warmup           blobs put ahead of a push, through the same stages, without retries

No Prefect here: ``tasks/push.py`` and ``flows/push.py`` wrap this package.
"""
