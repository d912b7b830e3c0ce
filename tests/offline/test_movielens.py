"""MovieLens-100k loader and its knowledge-graph tags, on a hand-made ml-100k folder (the recbole layout)."""

from __future__ import annotations

import pytest

from topicfs.contracts import ContractError
from topicfs.movielens import MovieLens100k, load_ml100k, with_kg_tags

FILES = {
    "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t3\t4\t881250951\n",
    "item": (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
        "3\tFour Rooms\t1995\tThriller\n"
        "4\tUnlinked\t1994\tDrama\n"
    ),
    "user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n",
    "link": "item_id:token\tentity_id:token\n1\tm.toy\n2\tm.gold\n3\tm.four\n",
    "kg": (
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.toy\tfilm.film.directed_by\tm.lasseter\n"
        "m.gold\tfilm.film.directed_by\tm.campbell\n"
        "m.four\tfilm.film.directed_by\tm.lasseter\n"  # two movies share this director: a tag
        "m.toy\tfilm.film.actor\tm.hanks\n"
        "m.four\tfilm.film.actor\tm.hanks\n"
        "m.gold\tfilm.film.actor\tm.hanks\n"
        "m.toy\tfilm.film.actor\tm.hanks\n"  # a repeated fact counts once
        "m.gold\tfilm.film.language\tm.english\n"
        "m.toy\tfilm.film.language\tm.english\n"
        "m.lasseter\tfilm.director.film\tm.toy\n"  # relations ending like another: name them in full
        "m.hanks\tfilm.actor.film\tm.toy\n"
    ),
}


@pytest.fixture
def movielens(tmp_path):
    for part, text in FILES.items():
        (tmp_path / f"ml-100k.{part}").write_text(text)
    return load_ml100k(tmp_path)


def tags_of(videos):
    return dict(zip(videos["video_id"], videos["tags"]))


def test_loader_reads_the_contract(movielens):
    videos = movielens.videos
    assert tags_of(videos)[1] == ["Animation", "Children's", "Comedy"]
    assert videos.set_index("video_id").loc[2, "primary_class"] == "Action"
    assert videos.set_index("video_id").loc[4, "secondary_class"] == "1990s"
    assert len(movielens.kg) == 11 and set(movielens.item_entities["video_id"]) == {1, 2, 3}


def test_kg_tags_are_shared_facts_beside_the_genres(movielens):
    tags = tags_of(with_kg_tags(movielens, ["directed_by", "film.film.actor"]))
    assert tags[1] == ["Animation", "Children's", "Comedy", "actor:m.hanks", "directed_by:m.lasseter"]
    assert tags[2] == ["Action", "Adventure", "Thriller", "actor:m.hanks"]  # its director is on one movie only
    assert tags[3] == ["Thriller", "actor:m.hanks", "directed_by:m.lasseter"]
    assert tags[4] == ["Drama"]  # no KB4Rec link: genres alone
    assert tags_of(movielens.videos)[1] == ["Animation", "Children's", "Comedy"]  # the loaded table is not changed


def test_kg_tags_min_movies_and_no_relations(movielens):
    tags = tags_of(with_kg_tags(movielens, ["directed_by"], min_movies=1))
    assert tags[2] == ["Action", "Adventure", "Thriller", "directed_by:m.campbell"]
    assert tags_of(with_kg_tags(movielens, ["language"], min_movies=3))[1] == ["Animation", "Children's", "Comedy"]
    assert tags_of(with_kg_tags(movielens, [])) == tags_of(movielens.videos)


def test_kg_tags_of_relations_with_the_same_last_part_stay_apart(movielens):
    """Two relations ending in '.film' must not merge into one 'film:' tag: theirs carry the full relation name."""
    videos = with_kg_tags(movielens, ["film.director.film", "film.actor.film", "directed_by"], min_movies=1)
    linked = videos[videos["video_id"] == 1]  # no movie is the head of these two relations: nothing is added
    assert linked["tags"].iloc[0] == ["Animation", "Children's", "Comedy", "directed_by:m.lasseter"]
    # link the movies to the heads of those relations, so that each gets one fact of each
    entities = movielens.item_entities.assign(entity=["m.lasseter", "m.hanks", "m.four"])
    as_movies = MovieLens100k(movielens.videos, movielens.interactions, movielens.users, entities, movielens.kg)
    tags = tags_of(with_kg_tags(as_movies, ["film.director.film", "film.actor.film"], min_movies=1))
    assert tags[1] == ["Animation", "Children's", "Comedy", "film.director.film:m.toy"]
    assert tags[2] == ["Action", "Adventure", "Thriller", "film.actor.film:m.toy"]


def test_kg_tags_bad_input_is_a_clear_error(movielens):
    with pytest.raises(
        ValueError,
        match=r"'composer' not in ml-100k.kg; it has: film.actor.film, film.director.film, film.film.actor, film.film.directed_by, film.film.language$",
    ):
        with_kg_tags(movielens, ["composer"])
    with pytest.raises(
        ValueError, match=r"'film' is the last part of 2 relations \(film.actor.film, film.director.film\): name one in full"
    ):
        with_kg_tags(movielens, ["film"])
    with pytest.raises(ValueError, match="min_movies must be >= 1"):
        with_kg_tags(movielens, ["actor"], min_movies=0)


def test_missing_part_is_a_clear_error(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(FILES["inter"])
    with pytest.raises(ContractError, match="no ml-100k.item in this folder"):
        load_ml100k(tmp_path)
