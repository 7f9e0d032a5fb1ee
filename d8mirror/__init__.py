"""d8mirror: mirror Deckhouse packages between OCI registries and tar bundles.

This package is the pure domain core: it never imports Prefect.
"""

__version__ = "0.1.0"
