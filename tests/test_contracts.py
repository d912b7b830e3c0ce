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
        ("x,cat,,p,s,[],2026-01-01", "video_id", "expected an integer"),
        ("-3,cat,,p,s,[],2026-01-01", "video_id", "must be >= 0"),
        ("1,dup,,p,s,[],2026-01-01", "video_id", "duplicate of row 1"),
        ("5,cat,,p,s,[oops,2026-01-01", "tags", "expected a list of tags"),
        ("6,cat,,p,s,[],not-a-date", "publish_ts", "not a timestamp"),
        ("7,cat,,p,s,[],10000-01-01", "publish_ts", "not a timestamp"),
        ("8,cat,,p,s,[],", "publish_ts", "missing timestamp"),
        ("9,cat,,p,s,[],1767225600000", "publish_ts", "looks like milliseconds"),
        ("10,cat,,p,s,[],1767225600000000.0", "publish_ts", "looks like milliseconds or microseconds"),
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
    with pytest.raises(ContractError, match=r"videos.parquet: not a Parquet file"):
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


def test_timestamps_before_1970_and_after_2262_are_valid(tmp_path):
    """Any instant Arrow's timestamp[us] holds is valid: 1920 as text and as negative epoch seconds, 1500 and 2999."""
    header = GOOD_VIDEOS.splitlines()[0]
    path = _write_csv(
        tmp_path,
        "videos.csv",
        f"{header}\n1,a,,p,s,[],1920-05-01\n2,b,,p,s,[],-1567468800\n3,c,,p,s,[],2999-01-01T00:00:00Z\n4,d,,p,s,[],1500-01-01\n",
    )
    videos = load_videos(path)
    assert [t.isoformat() for t in videos["publish_ts"]] == [
        "1920-05-01T00:00:00+00:00",
        "1920-05-01T00:00:00+00:00",
        "2999-01-01T00:00:00+00:00",
        "1500-01-01T00:00:00+00:00",
    ]
    assert str(videos["publish_ts"].dtype) == "datetime64[us, UTC]"
    videos.to_parquet(tmp_path / "videos.parquet")
    assert load_videos(tmp_path / "videos.parquet")["publish_ts"].tolist() == videos["publish_ts"].tolist()
    in_ns = load_videos(_write_csv(tmp_path, "recent.csv", f"{header}\n1,a,,p,s,[],1920-05-01\n"))
    assert str(in_ns["publish_ts"].dtype) == "datetime64[ns, UTC]"


def test_skip_summary_counts_rows_per_reason(tmp_path):
    from topicfs.contracts import read_videos, skipped_summary

    header = GOOD_VIDEOS.splitlines()[0]
    path = _write_csv(
        tmp_path,
        "videos.csv",
        f"{header}\n1,a,,p,s,[],2020-01-01\n1,b,,p,s,[],2020-01-01\nx,c,,p,s,[],2020-01-01\ny,d,,p,s,[],\n5,e,,p,s,[],\n",
    )
    videos, errors = read_videos(path, on_error="skip")
    assert videos["video_id"].tolist() == [1]
    summary = skipped_summary(errors)
    assert summary.startswith(f"skipped 4 invalid row(s) of {path}: ")
    assert "2 x publish_ts: missing timestamp" in summary
    assert "2 x video_id: expected an integer" in summary
    assert "1 x video_id: duplicate" in summary
