"""`rnncap.utils.jobs`: shards split the input exactly, the JSON-lines output survives a torn
last line and refuses to be resumed with other settings."""

from __future__ import annotations

import json

import pytest

from rnncap.utils.jobs import JobError, JsonLinesOutput, parse_shard, take_shard


def test_parse_shard_forms():
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard("3/4") == (3, 4)
    assert parse_shard("auto", {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    slurm = {
        "SLURM_ARRAY_TASK_ID": "11",
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "8",
    }
    assert parse_shard("auto", slurm) == (3, 4)


@pytest.mark.parametrize(
    "text, environ",
    [
        ("4/4", {}),
        ("-1/4", {}),
        ("1", {}),
        ("a/b", {}),
        ("0/0", {}),
        ("auto", {}),
        ("auto", {"RANK": "5", "WORLD_SIZE": "2"}),
        ("auto", {"RANK": "x", "WORLD_SIZE": "2"}),
    ],
)
def test_bad_shards_are_one_line_errors(text, environ):
    with pytest.raises(JobError) as error:
        parse_shard(text, environ)
    message = str(error.value)
    assert message.startswith("--shard") and "\n" not in message


def test_shards_partition_the_sorted_input():
    paths = [f"img/{name}.jpg" for name in "qwertyuiopasdfghjklzx"]
    for count in (1, 2, 3, 7, 30):
        shards = [take_shard(paths, i, count) for i in range(count)]
        assert sorted(p for s in shards for p in s) == sorted(paths)  # each path exactly once
        ranked = sorted(paths)
        for i, shard in enumerate(shards):  # the reference: position in sorted order mod count
            assert shard == [p for k, p in enumerate(ranked) if k % count == i]
        assert take_shard(list(reversed(paths)), 0, count) == shards[0]  # input order is moot


SETTINGS = {"model": "m", "beam": None, "max_length": None, "shard": None}


def _write(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _record(name: str) -> str:
    return json.dumps({"image": name, "caption": "a cat", "score": -1.0})


def test_torn_last_line_is_cut_and_redone(tmp_path):
    out = tmp_path / "captions.jsonl"
    out.write_text(_record("a.jpg") + "\n" + _record("b.jpg") + "\n" + '{"image": "c.j')
    output = JsonLinesOutput(out, SETTINGS, resume=True)
    assert output.done == {"a.jpg", "b.jpg"} and output.dropped_torn_line
    output.write({"image": "c.jpg", "caption": "a dog", "score": -2.0})
    output.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg"]


def test_damaged_last_complete_line_is_redone_but_not_one_in_the_middle(tmp_path):
    out = tmp_path / "captions.jsonl"
    _write(out, [_record("a.jpg"), "\0\0\0"])  # a crash can leave zeros
    output = JsonLinesOutput(out, SETTINGS, resume=True)
    output.close()
    assert output.done == {"a.jpg"} and out.read_text() == _record("a.jpg") + "\n"
    _write(out, [_record("a.jpg"), "garbage", _record("b.jpg")])
    with pytest.raises(JobError, match="line 2"):
        JsonLinesOutput(out, SETTINGS, resume=True)


def test_existing_output_needs_resume_and_the_same_settings(tmp_path):
    out = tmp_path / "captions.jsonl"
    JsonLinesOutput(out, SETTINGS, resume=False).close()  # empty: may be started again
    output = JsonLinesOutput(out, SETTINGS, resume=False)
    output.write({"image": "a.jpg", "caption": "a cat", "score": -1.0})
    output.close()
    with pytest.raises(JobError, match="--resume"):
        JsonLinesOutput(out, SETTINGS, resume=False)
    with pytest.raises(JobError, match="beam None now 5") as error:
        JsonLinesOutput(out, {**SETTINGS, "beam": 5}, resume=True)
    assert "\n" not in str(error.value)
    output = JsonLinesOutput(out, SETTINGS, resume=True)
    output.close()
    assert output.done == {"a.jpg"}
