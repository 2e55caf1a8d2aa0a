"""Simulated OhioT1DM files are written in the full release format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biokd.glucose.ohiot1dm import read_patient_xml


def test_simulated_files_carry_every_release_element(tmp_path: Path) -> None:
    """Release files hold every stream element, empty or not; other readers of the format look them all up."""
    import xml.etree.ElementTree as ET

    import pandas as pd

    from biokd.glucose.ohiot1dm import STREAMS
    from biokd.glucose.simulate import RELEASE_ELEMENTS, ohio_xml

    assert set(RELEASE_ELEMENTS) == set(STREAMS)  # the writer and the reader know the same streams
    rows = pd.DataFrame(
        {
            "time": pd.date_range("2025-01-01 07:00", periods=6, freq="5min"),
            "cgm": [120.4, 125.0, 131.2, 140.0, 150.6, 149.0],
            "basal": [0.8, 0.8, 0.8, 1.0, 1.0, 1.0],
            "bolus": [0, 3.5, 0, 0, 0, 0],
            "carbs": [0, 40, 0, 0, 0, 0],
        }
    )
    keep = np.array([True, True, False, True, True, True])
    path = tmp_path / "900-ws-training.xml"
    path.write_text(ohio_xml("900", rows, keep))
    root = ET.parse(path).getroot()
    assert [child.tag for child in root] == list(RELEASE_ELEMENTS)
    counts = {child.tag: len(child) for child in root}
    assert counts["glucose_level"] == 5 and counts["basal"] == 2 and counts["bolus"] == counts["meal"] == 1
    assert all(counts[name] == 0 for name in ("basis_heart_rate", "exercise", "finger_stick", "acceleration"))
    tables = read_patient_xml(path).tables
    assert list(tables["glucose_level"]["value"]) == [120, 125, 140, 151, 149]
