"""Every user error of the CLI, run as a user runs it (a subprocess in a fresh folder): one line ``error: …``
naming the file / row / field / setting and the fix, exit code 2, no traceback; ``--verbose`` adds the traceback.

Each case stops before any model library loads, so the whole file takes seconds per case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = "video_id,title,cover_image,primary_class,secondary_class,tags,publish_ts\n"


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, nothing but one ``error: …`` line on stderr holding every fragment, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def good_rows(n: int) -> str:
    return "".join(f"{i},video {i},,pets,cats,a|b,2020-01-0{1 + i % 9}\n" for i in range(n))


def case_no_such_file(tmp: Path) -> tuple[list[str], tuple[str, ...]]:
    return ["topics", "learn", "--dataset", "file", "--data", "missing.parquet"], ("missing.parquet: no such file", str(tmp))


def case_missing_column(tmp: Path):
    write(tmp, "videos.csv", "video_id,title,tags\n1,a,x\n")
    return ["topics", "learn", "--dataset", "file", "--data", "videos.csv"], ("videos.csv: missing column(s) publish_ts", "data contracts")


def case_wrong_type(tmp: Path):
    pd.DataFrame(
        {"video_id": ["a", "b"], "title": ["x", "y"], "tags": [["t"], ["u"]], "publish_ts": pd.to_datetime(["2020-01-01"] * 2, utc=True)}
    ).to_parquet(tmp / "videos.parquet")
    return ["topics", "learn", "--dataset", "file", "--data", "videos.parquet"], (
        "videos.parquet: 2 invalid value(s)",
        "row 1: field 'video_id': expected an integer, got 'a'",
        "--on-error skip",
    )


def case_duplicate_ids(tmp: Path):
    write(tmp, "videos.csv", HEADER + good_rows(3) + "1,again,,pets,cats,a,2020-01-01\n")
    return ["topics", "learn", "--dataset", "file", "--data", "videos.csv"], ("videos.csv: row 4: field 'video_id': duplicate of row 2",)


def case_empty_file(tmp: Path):
    write(tmp, "videos.csv", "")
    return ["topics", "learn", "--dataset", "file", "--data", "videos.csv"], ("videos.csv: the file is empty",)


def case_header_only(tmp: Path):
    write(tmp, "videos.csv", HEADER)
    return ["topics", "learn", "--dataset", "file", "--data", "videos.csv"], ("videos.csv: no rows",)


def case_directory(tmp: Path):
    (tmp / "videos").mkdir()
    return ["topics", "learn", "--dataset", "file", "--data", "videos"], ("is a folder, not a file",)


def case_csv_named_parquet(tmp: Path):
    write(tmp, "videos.parquet", HEADER + good_rows(3))
    return ["topics", "learn", "--dataset", "file", "--data", "videos.parquet"], ("not a Parquet file", "name it .csv")


def case_missing_data(tmp: Path):
    return ["topics", "learn", "--dataset", "file"], ("--dataset file needs --data",)


def case_unknown_dataset(tmp: Path):
    return ["topics", "learn", "--dataset", "kuairek"], (
        "'kuairek' is not one of 'synthetic', 'kuairec', 'file'",
        "topicfs topics learn --help",
    )


def case_k_larger_than_catalogue(tmp: Path):
    write(tmp, "videos.csv", HEADER + good_rows(5))
    return ["topics", "learn", "--dataset", "file", "--data", "videos.csv"], (
        "K = 60) is larger than the catalogue (5 videos)",
        "TOPICFS_TOPICS__N_TOPICS",
    )


def case_bad_setting_value(tmp: Path):
    return ["settings"], ("TOPICFS_TOPICS__N_TOPICS='many'", "valid integer", "fix or unset")


def case_bad_json_setting(tmp: Path):
    return ["settings"], ("TOPICFS_MMOE__CNN_CHANNELS", "not valid JSON")


def case_refresh_before_training(tmp: Path):
    return ["offline", "mrlm", "refresh", "--user-id", "1"], ("no trained MRLM model", "topicfs offline mrlm train")


def case_pusher_without_repo(tmp: Path):
    return ["stream", "pusher"], ("stream.feast_repo_path is not set", "TOPICFS_STREAM__FEAST_REPO_PATH")


def case_table2_missing_interactions(tmp: Path):
    write(tmp, "videos.csv", HEADER + good_rows(3))
    return ["offline", "table2", "--dataset", "file", "--videos", "videos.csv"], ("--dataset file needs --interactions",)


def case_table2_unknown_dataset(tmp: Path):
    return ["offline", "table2", "--dataset", "kuairec"], ("'kuairec' is not one of 'synthetic', 'movielens', 'file'",)


def case_bad_interactions(tmp: Path):
    write(tmp, "clicks.csv", "user_id,video_id,clicked,ts\n1,2,1,2020-01-01\n1,3,yes,2020-01-01\n")
    return ["offline", "train-ranker", "--interactions", "clicks.csv", "--without-topics"], ("clicks.csv: row 2: field 'clicked'",)


def case_ranker_without_features(tmp: Path):
    write(tmp, "clicks.csv", "user_id,video_id,clicked,ts\n1,2,1,2020-01-01\n")
    return ["offline", "train-ranker", "--interactions", "clicks.csv"], ("--feature-repo", "--video-topics", "--without-topics")


CASES = {
    "no such file": (case_no_such_file, {}),
    "missing column": (case_missing_column, {}),
    "wrong type": (case_wrong_type, {}),
    "duplicate ids": (case_duplicate_ids, {}),
    "empty file": (case_empty_file, {}),
    "header only": (case_header_only, {}),
    "directory": (case_directory, {}),
    "csv named parquet": (case_csv_named_parquet, {}),
    "missing --data": (case_missing_data, {}),
    "unknown --dataset": (case_unknown_dataset, {}),
    "K > catalogue": (case_k_larger_than_catalogue, {}),
    "bad TOPICFS value": (case_bad_setting_value, {"TOPICFS_TOPICS__N_TOPICS": "many"}),
    "bad TOPICFS JSON": (case_bad_json_setting, {"TOPICFS_MMOE__CNN_CHANNELS": "[32, 64"}),
    "mrlm refresh before training": (case_refresh_before_training, {}),
    "pusher without Feast repo": (case_pusher_without_repo, {}),
    "table2 file without interactions": (case_table2_missing_interactions, {}),
    "table2 unknown dataset": (case_table2_unknown_dataset, {}),
    "bad interactions row": (case_bad_interactions, {}),
    "ranker without features": (case_ranker_without_features, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_exit_2(case, tmp_path):
    make, env = CASES[case]
    args, fragments = make(tmp_path)
    assert_one_error_line(run_cli(args, tmp_path, env), *fragments)


def test_verbose_adds_the_traceback(tmp_path):
    result = run_cli(["topics", "learn", "--dataset", "file", "--data", "missing.parquet", "--verbose"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ContractError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_skip_drops_bad_rows_and_counts_them_per_reason(tmp_path):
    """--on-error skip keeps the valid rows and prints a count per reason; here K then stops the run, after the count."""
    write(tmp_path, "videos.csv", HEADER + good_rows(4) + "x,bad,,p,s,a,2020-01-01\ny,bad,,p,s,a,\n7,no date,,p,s,a,\n")
    result = run_cli(["topics", "learn", "--dataset", "file", "--data", "videos.csv", "--on-error", "skip"], tmp_path)
    assert "skipped 3 invalid row(s)" in result.stderr
    assert "2 x publish_ts: missing timestamp" in result.stderr and "2 x video_id: expected an integer" in result.stderr
    assert_one_error_line(
        subprocess.CompletedProcess(result.args, result.returncode, result.stdout, result.stderr.split("\n", 1)[1]),
        "larger than the catalogue (4 videos)",
    )


def test_unknown_variable_is_warned_about(tmp_path):
    result = run_cli(["settings"], tmp_path, {"TOPICFS_TOPICS__N_TOPIC": "30", "TOPICFS_NOT_A_SECTION": "1"})
    assert result.returncode == 0
    assert "TOPICFS_TOPICS__N_TOPIC is not a setting and is ignored; did you mean TOPICFS_TOPICS__N_TOPICS?" in result.stderr
    assert "TOPICFS_NOT_A_SECTION is not a setting" in result.stderr
    assert '"n_topics": 60' in result.stdout  # ignored indeed


def test_settings_and_logs_mask_passwords(tmp_path):
    env = {"TOPICFS_REDIS__URL": "redis://:hunter2@127.0.0.1:1/0", "TOPICFS_KAFKA__SASL_PASSWORD": "hunter3"}
    result = run_cli(["settings"], tmp_path, env)
    assert result.returncode == 0
    assert "hunter2" not in result.stdout and "hunter3" not in result.stdout
    assert '"url": "redis://:****@127.0.0.1:1/0"' in result.stdout
    logged = run_cli(["--verbose", "offline", "mrlm", "refresh", "--user-id", "1"], tmp_path, env)
    assert "hunter2" not in logged.stderr
    from topicfs.errors import mask_secrets

    assert mask_secrets("connect to rediss://user:pa:ss@h:6380/0 failed") == "connect to rediss://user:****@h:6380/0 failed"


def test_relative_paths_are_the_callers_folder(tmp_path):
    """Relative paths in settings mean the folder the command was started in, also in child processes
    (which get the settings as absolute TOPICFS_* values)."""
    env = {"TOPICFS_PATHS__ARTIFACTS_DIR": "art", "TOPICFS_STREAM__FEAST_REPO_PATH": "repo", "TOPICFS_FEAST__REPO_PATH": "repo"}
    result = run_cli(["settings"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert f'"artifacts_dir": "{tmp_path / "art"}"' in result.stdout
    assert f'"feast_repo_path": "{tmp_path / "repo"}"' in result.stdout


def test_faiss_import_is_quiet(tmp_path):
    """faiss logs seven INFO lines at import; the CLI's logging keeps them out unless --verbose."""
    code = "from topicfs.logs import configure_logging; from topicfs.settings import get_settings; configure_logging(get_settings().logging); import faiss"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert result.returncode == 0 and "faiss" not in result.stderr, result.stderr


def test_old_command_names_still_work_with_a_deprecation_line(tmp_path):
    result = run_cli(["mrlm", "refresh", "--user-id", "1"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("deprecated: use `topicfs offline mrlm refresh`")
    for old, new in ((["serve", "train"], "topicfs offline train-ranker"), (["serve", "table2"], "topicfs offline table2")):
        shown = run_cli([*old, "--help"], tmp_path)
        assert shown.returncode == 0 and new in " ".join(shown.stdout.split()), shown.stdout
    top = run_cli(["--help"], tmp_path).stdout
    assert "offline" in top and " mrlm " not in top


def test_a_second_dataset_under_the_same_name_is_refused(tmp_path):
    """Two `data/` folders: the second one's report folder would be the first one's, so the command stops at once."""
    for project in ("a", "b"):
        (tmp_path / project / "data").mkdir(parents=True)
        write(tmp_path / project / "data", "videos.csv", HEADER + good_rows(3))
        write(tmp_path / project / "data", "interactions.csv", "user_id,video_id,clicked,ts\n1,1,1,2020-01-01\n")
    from topicfs.datasets import data_files, report_dir

    first = data_files(tmp_path / "a" / "data" / "videos.csv", tmp_path / "a" / "data" / "interactions.csv")
    report_dir(tmp_path / "artifacts" / "reports", "table2_data", first.sources())
    args = ["offline", "table2", "--dataset", "file", "--videos", "data/videos.csv", "--interactions", "data/interactions.csv"]
    env = {"TOPICFS_PATHS__ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    assert_one_error_line(
        run_cli(args, tmp_path / "b", env), "table2_data holds the reports of another dataset", str(tmp_path / "a"), "--name"
    )
    assert report_dir(tmp_path / "artifacts" / "reports", "table2_data", first.sources()).name == "table2_data"  # the same data: reused


def readme_block(after: str, language: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


def test_readme_contract_examples_load(tmp_path):
    from topicfs.contracts import load_interactions, load_videos

    videos = load_videos(write(tmp_path, "videos.csv", readme_block("**Videos**", "csv")))
    assert videos["video_id"].tolist() == [1000, 1001, 1002]
    assert videos["tags"].tolist() == [["western", "outlaw"], [], ["documentary", "ocean"]]
    assert videos["publish_ts"].dt.year.tolist() == [1954, 1962, 2019]
    interactions = load_interactions(write(tmp_path, "interactions.csv", readme_block("**Interactions**", "csv")))
    assert interactions["clicked"].tolist() == [1, 0, 1]


def test_readme_clicks_step_makes_an_interactions_file(tmp_path):
    """The README's snippet turns separate impressions and clicks into the --clicks file ranker training reads."""
    from topicfs.contracts import load_interactions

    t = pd.Timestamp("2026-12-01T10:00:00Z")
    pd.DataFrame({"user_id": [1, 1, 2], "video_id": [5, 6, 5], "ts": [t, t, t + pd.Timedelta("1h")]}).to_parquet(
        tmp_path / "impressions.parquet"
    )
    pd.DataFrame({"user_id": [1, 2], "video_id": [5, 5], "ts": [t + pd.Timedelta("2min"), t]}).to_parquet(tmp_path / "clicks.parquet")
    (tmp_path / "data").mkdir()
    code = readme_block("The `--clicks` file of ranker training", "python")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    log = load_interactions(tmp_path / "data" / "interactions.csv").sort_values(["user_id", "video_id"])
    assert log[["user_id", "video_id", "clicked"]].values.tolist() == [[1, 5, 1], [1, 6, 0], [2, 5, 0]]  # user 2 clicked before being shown
