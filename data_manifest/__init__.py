"""Versioned manifests (Delta Lake) and their pandas readers.

from data_manifest import Manifest
faces = Manifest("data").read("faces")            # latest version
faces_v0 = Manifest("data").read("faces", version=0)
"""

from data_manifest.store import Manifest, ManifestError

__all__ = ["Manifest", "ManifestError"]
