"""Two data roots compared table by table (the check behind a refactor or a resumed run)."""

import numpy as np
import pandas as pd

from data_manifest.compare import comparable


def test_rows_compare_as_multisets_without_run_columns():
    a = pd.DataFrame({"face_id": ["f1", "f2"], "score": [0.5, np.nan], "run_id": ["r1", "r1"]})
    b = pd.DataFrame({"face_id": ["f2", "f1"], "score": [np.nan, 0.5], "run_id": ["r2", "r2"]})
    assert comparable(a) == comparable(b)
    b.loc[0, "face_id"] = "f3"
    assert sum(((comparable(a) - comparable(b)) + (comparable(b) - comparable(a))).values()) == 2


def test_a_library_copied_elsewhere_compares_equal_once_its_folder_is_mapped():
    a = pd.DataFrame({"source": ["/old/lib/a.jpg", None], "album_id": ["x", "y"]})
    b = pd.DataFrame({"source": ["/new/lib/a.jpg", None], "album_id": ["x", "y"]})
    assert comparable(a) != comparable(b)
    assert comparable(a, ("/old/lib", "/new/lib")) == comparable(b)
