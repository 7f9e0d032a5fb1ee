"""Push: unpack bundle archives into one tree and push every layout into a target registry.

Modules (one concept each)::

    unified          unpack archives (sorted) into one tree; index.json merge with Q2 provenance;
                     large blobs of plain tars stay in the archive (spans file in the tree)
    routing          layout path == registry path; packages/modules path-suffix remaps
    blobsource       a layout's blobs: its files, else their spans in plain tar archives
    pusher           push one layout: blobs HEAD-first (mount, upload), manifests byte-exact
    tinyimage        a deterministic tiny image (discovery tags)
    discovery_tags   ``<registry>/<packages path>:<name>`` for every package in the tree
    access           the write check of §8.6 (an upload session opened and cancelled)
    verify           every pushed (repository, tag) resolves to the bundle's digest
    summary          the push summary text and a JSON-able result

No Prefect here: ``tasks/push.py`` and ``flows/push.py`` wrap this package.
"""
