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
        (HEADER + '0,UNKNOWN,a\rb,"[x,y]",8,n,-124,UNKNOWN,-124,UNKNOWN\n1,UNKNOWN,,[],-124,UNKNOWN,673,n,-124,UNKNOWN\n').encode()
    )
    videos = load_kuairec(tmp_path)
    assert videos["title"].tolist() == ["a b", ""]
    assert videos["tags"].tolist() == [["x", "y"], []]
    assert videos["primary_class"].tolist() == ["8", None]
    assert videos["secondary_class"].tolist() == [None, "673"]


def test_cover_text_goes_in_front_of_the_caption(tmp_path):
    path = tmp_path / "kuairec_caption_category.csv"
    path.write_bytes(
        (
            HEADER + "0,封面字,正文,[],8,n,-124,UNKNOWN,-124,UNKNOWN\n"  # both: cover text first
            "1,封面字,,[],8,n,-124,UNKNOWN,-124,UNKNOWN\n"  # no caption: the cover text alone
            "2,UNKNOWN,正文,[],8,n,-124,UNKNOWN,-124,UNKNOWN\n"  # unknown cover text is not text
            "3,正文,正文 更多,[],8,n,-124,UNKNOWN,-124,UNKNOWN\n"
        ).encode()  # already in the caption: not twice
    )
    assert load_kuairec(tmp_path)["title"].tolist() == ["封面字。正文", "封面字", "正文", "正文 更多"]
    assert load_kuairec(tmp_path, cover_text=False)["title"].tolist() == ["正文", "", "正文", "正文 更多"]


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


@pytest.mark.skipif(not KUAIREC.exists(), reason="../shared/data/kuairec is not beside the checkout")
def test_end_to_end_topic_job_on_a_kuairec_slice(tmp_path):
    """300 real videos through run_topic_job with the packaged MiniLM: four tables, one row per video, sane topics."""
    import numpy as np
    import pandas as pd

    from offline_jobs.inference import TopicAssigner
    from offline_jobs.pipeline import TopicModels, run_topic_job
    from topicfs import tables
    from topicfs.settings import MMoEConfig, PathsConfig, Settings, TagGraphConfig, TopicsConfig

    videos = load_kuairec(KUAIREC).iloc[:300].reset_index(drop=True)
    settings = Settings(
        paths=PathsConfig(artifacts_dir=tmp_path),
        tag_graph=TagGraphConfig(walk_length=20, walks_per_tag=5, embedding_dim=16, epochs=2),
        # 1 epoch, 16 tokens, top layer only: the real f_T path in seconds rather than minutes
        mmoe=MMoEConfig(
            epochs=1,
            max_title_tokens=16,
            title_trainable_layers=1,
            n_experts=4,
            expert_dim=16,
            tower_hidden=16,
            max_tags=100,
            batch_size=32,
            torch_threads=2,
        ),
        topics=TopicsConfig(n_topics=6, kmeans_iterations=10),
    )
    result = run_topic_job(videos, settings)

    from offline_jobs.pipeline import PRESENCE_AUDIT_FILE

    assert set(result.tables) == {
        tables.VIDEO_TOPICS,
        tables.TAG_EMBEDDINGS,
        tables.VIDEO_TAG_EMBEDDINGS,
        tables.TOPIC_CENTROIDS,
        tables.VIDEO_MAP,
        PRESENCE_AUDIT_FILE,
    }
    video_topics = pd.read_parquet(result.tables[tables.VIDEO_TOPICS])
    assert video_topics["video_id"].tolist() == videos["video_id"].tolist()
    assert (video_topics["n_topics"] >= 1).all(), "every video with a title or tags gets at least its nearest topic"
    assert all(0 <= t < 6 for ids in video_topics["topic_ids"] for t in ids)
    assert all(len(f) == 8 for f in video_topics["topic_feature"])
    video_tags = pd.read_parquet(result.tables[tables.VIDEO_TAG_EMBEDDINGS])
    assert video_tags["has_tags"].tolist() == (videos["tags"].map(len) > 0).tolist()
    assert len(pd.read_parquet(result.tables[tables.TOPIC_CENTROIDS])) == 6
    assert len(pd.read_parquet(result.tables[tables.TAG_EMBEDDINGS])) == len(result.models.tag_graph.tags_)
    # KuaiRec has no covers: f_C is dropped, the title (with added Chinese characters) carries z
    assert result.models.mmoe.modalities_ == ("title",)
    assert result.models.mmoe.vocabulary_report_.unk_rate_after < result.models.mmoe.vocabulary_report_.unk_rate_before
    assert np.isfinite([v for epoch in result.models.mmoe.history_ for v in epoch.values()]).all()
    # the saved models give the same topics to the same videos (what the stream does for new videos)
    reloaded = TopicAssigner(TopicModels.load(settings.paths.models_dir)).assign(videos.iloc[:20])
    assert reloaded == video_topics["topic_ids"].map(list).tolist()[:20]
