"""KuaiRec adapter on the real file and on hand-made variants of its quirks."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline_jobs.kuairec import load_kuairec
from topicfs.contracts import ContractError

KUAIREC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kuairec"
HEADER = "video_id,manual_cover_text,caption,topic_tag,first_level_category_id,first_level_category_name,second_level_category_id,second_level_category_name,third_level_category_id,third_level_category_name\n"


def test_quirks_unknowns_and_bare_carriage_returns(tmp_path):
    path = tmp_path / "kuairec_caption_category.csv"
    path.write_bytes(
        (HEADER + "0,UNKNOWN,a\rb,\"[x,y]\",8,n,-124,UNKNOWN,-124,UNKNOWN\n1,UNKNOWN,,[],-124,UNKNOWN,673,n,-124,UNKNOWN\n").encode()
    )
    videos = load_kuairec(tmp_path)
    assert videos["title"].tolist() == ["a b", ""]
    assert videos["tags"].tolist() == [["x", "y"], []]
    assert videos["primary_class"].tolist() == ["8", None]
    assert videos["secondary_class"].tolist() == [None, "673"]


def test_not_kuairec_is_rejected(tmp_path):
    (tmp_path / "kuairec_caption_category.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ContractError, match="missing column"):
        load_kuairec(tmp_path)


@pytest.mark.skipif(not KUAIREC.exists(), reason="../shared/data/kuairec is not beside the checkout")
def test_real_file_keeps_every_video():
    videos = load_kuairec(KUAIREC)
    assert len(videos) == 10728
    assert videos["video_id"].tolist() == list(range(10728))
    assert videos["secondary_class"].notna().sum() > 7000
    assert not (videos["primary_class"] == "-124").any()
