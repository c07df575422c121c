"""Result store (JSON lines that survive a kill) and the content-addressed model cache."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bench.harness.cache import ModelCache, content_key
from bench.harness.store import append_record, read_records, repair_tail


def records(n: int, start: int = 0) -> list[dict]:
    return [{"cell": f"digits/smallcnn/2/m{i}/0", "config_hash": "h", "acc_forget_test": i * 1.5,
             "nested": {"params": [i, "x"]}} for i in range(start, start + n)]


# ---------------------------------------------------------------- JSON-lines store


def test_append_then_read_round_trip(tmp_path):
    path = tmp_path / "runs.jsonl"
    written = records(3)
    for record in written:
        append_record(path, record)
    assert list(read_records(path)) == written
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4  # one line per record, newline-terminated


def test_nan_survives_the_round_trip(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"cell": "c", "config_hash": "h", "mia": float("nan")})
    (back,) = read_records(path)
    assert math.isnan(back["mia"])


def test_missing_file_reads_as_empty(tmp_path):
    assert list(read_records(tmp_path / "absent.jsonl")) == []
    repair_tail(tmp_path / "absent.jsonl")  # no error, nothing created
    assert not (tmp_path / "absent.jsonl").exists()


def write_with_torn_tail(path, complete: list[dict], partial: dict) -> bytes:
    """Complete records followed by the first half of another, as a killed writer leaves it."""
    for record in complete:
        append_record(path, record)
    intact = path.read_bytes()
    line = json.dumps(partial, sort_keys=True)
    with path.open("ab") as f:
        f.write(line[: len(line) // 2].encode())
    return intact


def test_half_written_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "runs.jsonl"
    complete = records(2)
    intact = write_with_torn_tail(path, complete, records(1, start=7)[0])

    assert list(read_records(path)) == complete
    repair_tail(path)
    assert path.read_bytes() == intact

    more = records(2, start=10)
    for record in more:
        append_record(path, record)
    assert list(read_records(path)) == complete + more


def test_a_complete_record_lacking_only_its_newline_is_kept(tmp_path):
    # A record is written in one write with its newline; a complete record without it is
    # complete data (the newline was lost, say, by an editor), not a torn write.
    path = tmp_path / "runs.jsonl"
    append_record(path, {"cell": "done", "config_hash": "h"})
    with path.open("ab") as f:
        f.write(b'{"cell": "kept", "config_hash": "h"}')
    assert [r["cell"] for r in read_records(path)] == ["done"]  # not read until repaired
    repair_tail(path)
    append_record(path, {"cell": "next", "config_hash": "h"})
    assert [r["cell"] for r in read_records(path)] == ["done", "kept", "next"]


def test_a_torn_tail_that_is_valid_json_but_not_a_record_is_dropped(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"cell": "done", "config_hash": "h"})
    with path.open("ab") as f:
        f.write(b'{"cell": "torn"}')
    repair_tail(path)
    assert [r["cell"] for r in read_records(path)] == ["done"]


def test_repair_of_a_file_holding_only_a_partial_line_empties_it(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b'{"cell": "to')
    assert list(read_records(path)) == []
    repair_tail(path)
    assert path.read_bytes() == b""


def test_repair_leaves_an_intact_file_alone(tmp_path):
    path = tmp_path / "runs.jsonl"
    for record in records(2):
        append_record(path, record)
    before = path.read_bytes()
    repair_tail(path)
    assert path.read_bytes() == before


def test_corrupt_complete_line_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"cell": "a", "config_hash": "h"})
    with path.open("ab") as f:
        f.write(b"not json at all\n")
    append_record(path, {"cell": "b", "config_hash": "h"})
    assert [r["cell"] for r in read_records(path)] == ["a", "b"]


# ---------------------------------------------------------------- model cache


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_model_cache_round_trip(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    model = tiny_model(0)
    model.train()(torch.randn(16, 4))  # move BatchNorm running stats off their defaults
    meta = {"spec": {"kind": "original", "seed": 0}, "train_s": 1.25}
    cache.save("k1", model, meta)

    other = tiny_model(1)
    with pytest.raises(AssertionError):
        assert_same_state(model, other)
    assert cache.load("k1", other) == meta
    assert_same_state(model, other)


def test_model_cache_miss_returns_none_and_leaves_model(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    model = tiny_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert cache.load("absent", model) is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_model_cache_save_is_atomic_and_overwrites(tmp_path):
    root = tmp_path / "cache"
    cache = ModelCache(root)
    cache.save("k", tiny_model(0), {"v": 1})
    cache.save("k", tiny_model(2), {"v": 2})
    assert sorted(p.name for p in root.iterdir()) == ["k.pt"]  # no temporary file left behind
    fresh = tiny_model(5)
    assert cache.load("k", fresh) == {"v": 2}
    assert_same_state(fresh, tiny_model(2))


def test_cache_file_loads_with_weights_only(tmp_path):
    cache = ModelCache(tmp_path)
    model = tiny_model(3)
    cache.save("key", model, {"note": "x"})
    blob = torch.load(cache.path("key"), map_location="cpu", weights_only=True)
    assert json.loads(blob["meta"]) == {"note": "x"}
    assert all(t.device.type == "cpu" for t in blob["state_dict"].values())
    fresh = tiny_model(4)
    fresh.load_state_dict(blob["state_dict"])
    assert_same_state(fresh, model)


def test_content_key_is_stable_and_order_independent():
    a = content_key({"dataset": "digits", "seed": 0, "train": {"lr": 0.001, "epochs": 3}})
    b = content_key({"train": {"epochs": 3, "lr": 0.001}, "seed": 0, "dataset": "digits"})
    c = content_key({"dataset": "digits", "seed": 1, "train": {"lr": 0.001, "epochs": 3}})
    assert a == b != c
    assert len(a) == 20 and all(ch in "0123456789abcdef" for ch in a)
