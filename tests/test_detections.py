"""The Detections type: what it refuses, and how it reaches the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from client.detections import Detections
from client.sinks import JsonlSink, ParquetSink

F32, I32 = np.float32, np.int32


@pytest.mark.parametrize(
    ("xyxy", "confidence", "class_id", "error", "message"),
    [
        (np.zeros((3, 5), F32), np.zeros(3, F32), np.zeros(3, I32), ValueError, r"xyxy must have shape \(N, 4\), got \(3, 5\)"),
        (np.zeros(4, F32), np.zeros(1, F32), np.zeros(1, I32), ValueError, r"xyxy must have shape \(N, 4\), got \(4,\)"),
        (np.zeros((3, 4), np.float64), np.zeros(3, F32), np.zeros(3, I32), ValueError, "xyxy must be float32, got float64"),
        (np.zeros((3, 4), F32), np.zeros(2, F32), np.zeros(3, I32), ValueError,
         r"confidence must have shape \(3,\) to match xyxy, got \(2,\)"),
        (np.zeros((3, 4), F32), np.zeros(3, F32), np.zeros(3, F32), ValueError, "class_id must be int32, got float32"),
        (np.zeros((3, 4), F32), np.zeros(3, F32), [0, 0, 0], TypeError, "class_id must be a numpy array, got list"),
    ],
)
def test_detections_refuse_arrays_of_the_wrong_shape_or_type_saying_expected_and_actual(
        xyxy, confidence, class_id, error, message) -> None:
    with pytest.raises(error, match=message):
        Detections(xyxy, confidence, class_id)


def test_detections_are_frozen_and_give_their_rows_in_the_output_column_order() -> None:
    d = Detections(np.array([[1.5, 2, 30, 40.25]], F32), np.array([0.875], F32), np.array([7], I32))
    assert len(d) == 1 and len(Detections.empty()) == 0
    assert list(d.rows()) == [(1.5, 2.0, 30.0, 40.25, 0.875, 7)]
    with pytest.raises(AttributeError):
        d.xyxy = np.zeros((0, 4), F32)  # type: ignore[misc]


def test_jsonl_rounds_pixels_to_hundredths_and_scores_to_four_places(tmp_path: Path) -> None:
    d = Detections(np.array([[1.23456, 0, 159.999, 95.5]], F32), np.array([0.123456], F32), np.array([3], I32))
    writer = JsonlSink(tmp_path).open("a.mp4")
    writer.write(0, 1 / 3, d)
    writer.write(1, 0.5, Detections.empty())
    writer.complete()
    lines = [json.loads(line) for line in (tmp_path / "a.mp4.jsonl").read_text().splitlines()]
    assert lines == [{"frame": 0, "t": 0.333333, "detections": [[1.23, 0.0, 160.0, 95.5, 0.1235, 3]]},
                     {"frame": 1, "t": 0.5, "detections": []}]


def test_parquet_keeps_float32_boxes_and_int32_classes_and_a_null_row_for_a_frame_without_any(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    d = Detections(np.array([[1.23456, 0, 159.999, 95.5]], F32), np.array([0.123456], F32), np.array([3], I32))
    writer = ParquetSink(tmp_path, names={3: "car"}).open("a.mp4")
    writer.write(0, 0.25, d)
    writer.write(1, 0.5, Detections.empty())
    writer.complete()
    table = pq.read_table(tmp_path / "detections" / "a.mp4.parquet")
    assert [str(f.type) for f in table.schema] == ["string", "int64", "double"] + ["float"] * 5 + ["int32", "string"]
    rows = table.to_pylist()
    assert rows[0]["x1"] == float(F32(1.23456)) and rows[0]["class_id"] == 3 and rows[0]["class_name"] == "car"
    assert rows[1] == {"video": "a.mp4", "frame": 1, "t": 0.5, "x1": None, "y1": None, "x2": None, "y2": None,
                       "score": None, "class_id": None, "class_name": None}
