"""The Detections type: what it refuses, and how it reaches the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.detections import Detections
from client.jsonl import frame_line
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
    assert [str(f.type) for f in table.schema] == ["string", "int64", "double"] + ["float"] * 5 + ["int32", "string", "int32"]
    rows = table.to_pylist()
    assert rows[0]["x1"] == float(F32(1.23456)) and rows[0]["class_id"] == 3 and rows[0]["class_name"] == "car"
    assert rows[1] == {"video": "a.mp4", "frame": 1, "t": 0.5, "x1": None, "y1": None, "x2": None, "y2": None,
                       "score": None, "class_id": None, "class_name": None, "track_id": None}


# -- the vectorised writers against the implementations they replaced ------------------------
# Kept here verbatim (as they were in client/sinks.py) as the definition of the bytes: a
# rewrite for speed must not change one byte of either format.

def previous_jsonl_line(index: int, t_s: float, detections: Detections) -> bytes:
    rows = [[round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), round(score, 4), class_id]
            for x1, y1, x2, y2, score, class_id in detections.rows()]
    return (json.dumps({"frame": index, "t": round(t_s, 6), "detections": rows}, separators=(",", ":")) + "\n").encode()


NAMES = {0: "person", 2: "car", 7: "truck"}  # some ids named, others not (their class_name is null)


def previous_parquet(path: Path, video: str, frames: list[tuple[int, float, Detections]], rows_per_group: int,
                     names: dict[int, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from client.sinks import _schema

    schema, rows, writer = _schema(names), [], None

    def flush() -> None:
        nonlocal writer
        columns = list(zip(*rows)) if rows else [[]] * len(schema)
        table = pa.table([pa.array(col, type=f.type) for f, col in zip(schema, columns)], schema=schema)
        if writer is None:
            writer = pq.ParquetWriter(str(path), schema)
        writer.write_table(table)
        rows.clear()

    for index, t_s, d in frames:
        if len(d) == 0:
            rows.append((video, index, t_s, *(None,) * 8))
        for row in d.rows():
            rows.append((video, index, t_s, *row, names.get(row[5]), None))
        if len(rows) >= rows_per_group:
            flush()
    flush()
    writer.close()


F32_ANY = st.floats(width=32)  # NaN, infinities, -0.0, subnormals, 3.4e38
F32_PIXEL = st.one_of(st.floats(0, 8000, width=32), st.integers(0, 64000).map(lambda k: k / 8))  # k/8: ties at 2 places
F32_SCORE = st.one_of(st.floats(0, 1, width=32), st.integers(0, 32).map(lambda k: k / 32))  # 1/32 = 0.03125: a tie


@st.composite
def detections_strategy(draw, pixel=F32_PIXEL, score=F32_SCORE) -> Detections:
    n = draw(st.integers(0, 12))
    xyxy = np.array(draw(st.lists(st.tuples(pixel, pixel, pixel, pixel), min_size=n, max_size=n)), F32).reshape(n, 4)
    conf = np.array(draw(st.lists(score, min_size=n, max_size=n)), F32)
    cls = np.array(draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=n, max_size=n)), I32)
    return Detections(xyxy, conf, cls)


@settings(max_examples=400, deadline=None)
@given(index=st.integers(0, 10**7), t_s=st.floats(0, 1e6), d=detections_strategy())
def test_the_vectorised_jsonl_line_is_byte_identical_to_a_python_round_per_value(index, t_s, d) -> None:
    assert frame_line(index, t_s, d) == previous_jsonl_line(index, t_s, d)


@settings(max_examples=200, deadline=None)
@given(d=detections_strategy(pixel=st.one_of(F32_ANY, F32_PIXEL), score=st.one_of(F32_ANY, F32_SCORE)))
def test_the_jsonl_line_of_negative_huge_or_non_finite_values_is_still_the_python_one(d) -> None:
    assert frame_line(3, 0.1, d) == previous_jsonl_line(3, 0.1, d)


def random_frames(count: int, seed: int) -> list[tuple[int, float, Detections]]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        n = int(rng.choice([0, 1, 5, 20]))
        xyxy = rng.uniform(0, 1920, (n, 4)).astype(F32)
        frames.append((i, i / 29.97, Detections(xyxy, rng.uniform(0, 1, n).astype(F32),
                                                rng.integers(0, 80, n).astype(I32))))
    return frames


def test_the_jsonl_file_is_byte_identical_to_the_previous_writer(tmp_path: Path) -> None:
    frames = random_frames(200, seed=3)
    writer = JsonlSink(tmp_path).open("a.mp4")
    for frame in frames:
        writer.write(*frame)
    writer.complete()
    assert (tmp_path / "a.mp4.jsonl").read_bytes() == b"".join(previous_jsonl_line(*f) for f in frames)


@pytest.mark.parametrize("rows_per_group", [7, 50_000])
def test_the_parquet_file_is_byte_identical_to_the_previous_writer(tmp_path: Path, monkeypatch, rows_per_group) -> None:
    pytest.importorskip("pyarrow")
    from client import sinks

    monkeypatch.setattr(sinks, "PARQUET_ROWS_PER_GROUP", rows_per_group)
    frames = random_frames(300, seed=4)
    (tmp_path / "new").mkdir()
    writer = ParquetSink(tmp_path / "new", names=NAMES).open("dir/a.mp4")
    for frame in frames:
        writer.write(*frame)
    writer.complete()
    previous_parquet(tmp_path / "previous.parquet", "dir/a.mp4", frames, rows_per_group, NAMES)
    assert (tmp_path / "new" / "detections" / "dir" / "a.mp4.parquet").read_bytes() == \
        (tmp_path / "previous.parquet").read_bytes()


@pytest.mark.parametrize("frames", [[], [(0, 0.0, Detections.empty())], [(0, 0.5, Detections.empty())] * 3])
def test_parquet_files_without_any_detection_are_byte_identical_to_the_previous_writer(tmp_path: Path, frames) -> None:
    pytest.importorskip("pyarrow")
    (tmp_path / "new").mkdir()
    writer = ParquetSink(tmp_path / "new", names=NAMES).open("a.mp4")
    for frame in frames:
        writer.write(*frame)
    writer.complete()
    previous_parquet(tmp_path / "previous.parquet", "a.mp4", frames, 50_000, NAMES)
    assert (tmp_path / "new" / "detections" / "a.mp4.parquet").read_bytes() == (tmp_path / "previous.parquet").read_bytes()
