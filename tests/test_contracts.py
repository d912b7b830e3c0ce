"""The loaders reject each kind of bad input with a message naming file, row and field, and keep every valid row."""

from __future__ import annotations

import pandas as pd
import pytest

from topicfs.contracts import ContractError, load_interactions, load_videos


def _write_csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_VIDEOS = (
    "video_id,title,cover_image,primary_class,secondary_class,tags,publish_ts\n"
    '1,cat video,,pets,cats,"[""cat"",""cute""]",2026-01-01T00:00:00Z\n'
    "2,dog video,img/2.png,pets,,dog|cute,1767225600\n"
)


def test_good_videos_csv_and_parquet_agree(tmp_path):
    csv_path = _write_csv(tmp_path, "videos.csv", GOOD_VIDEOS)
    from_csv = load_videos(csv_path)
    assert from_csv["video_id"].tolist() == [1, 2]
    assert from_csv["tags"].tolist() == [["cat", "cute"], ["dog", "cute"]]
    assert from_csv["secondary_class"].tolist() == ["cats", None]
    assert from_csv["cover_image"].tolist() == [None, str(tmp_path / "img/2.png")]
    assert from_csv["publish_ts"].tolist() == [pd.Timestamp("2026-01-01", tz="UTC")] * 2
    parquet_path = tmp_path / "videos.parquet"
    from_csv.to_parquet(parquet_path)
    from_parquet = load_videos(parquet_path)
    pd.testing.assert_frame_equal(from_csv, from_parquet)


@pytest.mark.parametrize(
    ("row", "field", "fragment"),
    [
        ('x,cat,,p,s,[],2026-01-01', "video_id", "expected an integer"),
        ('-3,cat,,p,s,[],2026-01-01', "video_id", "must be >= 0"),
        ('1,dup,,p,s,[],2026-01-01', "video_id", "duplicate of row 1"),
        ('5,cat,,p,s,[oops,2026-01-01', "tags", "expected a list of tags"),
        ('6,cat,,p,s,[],not-a-date', "publish_ts", "not a timestamp"),
        ('7,cat,,p,s,[],2999-01-01', "publish_ts", "out of range"),
    ],
)
def test_bad_video_rows_are_named(tmp_path, row, field, fragment):
    path = _write_csv(tmp_path, "videos.csv", GOOD_VIDEOS.splitlines()[0] + "\n" + GOOD_VIDEOS.splitlines()[1] + "\n" + row + "\n")
    with pytest.raises(ContractError) as info:
        load_videos(path)
    message = str(info.value)
    assert f"{path}: row 2: field '{field}'" in message
    assert fragment in message


def test_skip_mode_keeps_every_valid_row(tmp_path):
    path = _write_csv(tmp_path, "videos.csv", GOOD_VIDEOS + "x,bad,,p,s,[],2026-01-01\n3,ok,,p,s,[],2026-01-01\n")
    videos = load_videos(path, on_error="skip")
    assert videos["video_id"].tolist() == [1, 2, 3]


def test_missing_column_and_missing_file(tmp_path):
    path = _write_csv(tmp_path, "videos.csv", "video_id,title\n1,a\n")
    with pytest.raises(ContractError, match=r"videos.csv: missing column\(s\) tags"):
        load_videos(path)
    with pytest.raises(ContractError, match="no such file"):
        load_videos(tmp_path / "absent.parquet")
    other = _write_csv(tmp_path, "videos.json", "{}")
    with pytest.raises(ContractError, match="unsupported file type"):
        load_videos(other)


def test_unreadable_parquet_is_named(tmp_path):
    path = tmp_path / "videos.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ContractError, match=r"videos.parquet: cannot be read as parquet"):
        load_videos(path)


def test_interactions_bad_rows(tmp_path):
    path = _write_csv(
        tmp_path,
        "clicks.csv",
        "user_id,video_id,clicked,ts\n1,2,1,2026-01-01\n1,x,0,2026-01-01\n1,3,2,2026-01-01\n-1,3,0,2026-01-01\n1,3,0,\n",
    )
    with pytest.raises(ContractError) as info:
        load_interactions(path)
    message = str(info.value)
    assert "row 2: field 'video_id': expected an integer" in message
    assert "row 3: field 'clicked': expected 0 or 1" in message
    assert "row 4: field 'user_id': must be >= 0" in message
    assert "row 5: field 'ts': missing timestamp" in message
    kept = load_interactions(path, on_error="skip")
    assert kept[["user_id", "video_id", "clicked"]].values.tolist() == [[1, 2, 1]]


def test_ratings_become_clicks(tmp_path):
    path = _write_csv(tmp_path, "ratings.csv", "user_id,video_id,rating,ts\n1,2,5,881250949\n1,3,3,881250950\n1,4,abc,881250950\n")
    with pytest.raises(ContractError, match="row 3: field 'rating': not a number"):
        load_interactions(path, rating_threshold=4)
    table = load_interactions(path, rating_threshold=4, on_error="skip")
    assert table["clicked"].tolist() == [1, 0]
