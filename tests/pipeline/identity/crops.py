"""Real cartoon crops for the identity tests, and one run's faces and assets rows built from them."""

import cv2
import pandas as pd
import pytest

from pipeline.config import IdentitySettings
from pipeline.dedup import PublishedIndex
from pipeline.identity.embedding import DEFAULT_WEIGHTS
from pipeline.identity.matching import PRELABEL_COLUMNS
from pipeline.identity.published import Published
from pipeline.identity.stage import run_identity_stage
from pipeline.store import ContentStore
from tests.conftest import SHARED

HOLO = SHARED / "data" / "anime_identities" / "hololive_danbooru"
needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped embedder weights")


def crops_of(identity, n, start=0):
    return sorted((HOLO / identity).glob("*.jpg"))[start : start + n]


def settings(**values) -> IdentitySettings:
    """The stage's settings with the paper's thresholds unless given."""
    return IdentitySettings(**{"dedup_threshold": 0.95, "prelabel_threshold": 0.6, **values})


class Run:
    """Faces and assets rows of one run, with their crops in a real content store."""

    def __init__(self, root, name="f"):
        self.root, self.name = root, name  # name: face and asset ids of different runs must differ
        self.store = ContentStore(root / "store")
        self.faces, self.assets = [], []

    def add(self, image, album="holo", character=None, kind="still", sharpness=100.0):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        sha = self.store.put(data, ".jpg")
        face_id = f"{self.name}{len(self.faces)}"
        asset_id = f"{self.name}-a{len(self.assets)}"
        self.assets.append({"asset_id": asset_id, "kind": kind, "character": character, "album_id": album})
        self.faces.append(
            {
                "face_id": face_id,
                "asset_id": asset_id,
                "album_id": album,
                "crop_sha": sha,
                "status": "kept",
                "drop_reason": None,
                "sharpness": sharpness,
                "crop_w": image.shape[1],
                "crop_h": image.shape[0],
            }
        )
        return face_id

    def identity(self, published=None, run_id="run", random_sample=(), **values):
        """The stage on this run's rows; `values`: settings (the paper's thresholds unless given)."""
        return run_identity_stage(
            pd.DataFrame(self.faces),
            pd.DataFrame(self.assets),
            published or Published.nothing(),
            settings=settings(**values),
            data_root=self.root,
            run_id=run_id,
            random_sample=random_sample,
        )

    def publish(self, outcome, published=None, version=0):
        """What a manifest version would make of the outcome: the index gets its vectors, its faces
        and references become the published state of the next run."""
        published = published or Published.nothing()
        PublishedIndex(self.root, outcome.faces["embedder"].iloc[0]).commit(
            outcome.new_vectors, outcome.new_ids, version
        )
        faces = outcome.faces
        refs = faces.merge(
            pd.DataFrame(self.assets).query("kind == 'reference'")[["asset_id", "character"]], on="asset_id"
        )
        prelabels = pd.concat(
            [published.prelabels, faces[["face_id", *PRELABEL_COLUMNS, "embedder"]], pd.DataFrame(outcome.prelabels)],
            ignore_index=True,
        ).drop_duplicates("face_id", keep="last")
        return Published(
            pd.concat([published.references, refs[published.references.columns]], ignore_index=True),
            published.face_ids | set(faces["face_id"]),
            prelabels[["face_id", *PRELABEL_COLUMNS, "embedder"]],
            outcome.calibration["reference_set"],
            published.labels,
            pd.concat(
                [
                    published.crops,
                    faces.loc[faces["face_id"].isin(outcome.new_ids), ["face_id", "crop_sha", "album_id"]],
                ],
                ignore_index=True,
            ),
            version,
        )
