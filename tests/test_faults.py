"""Runs that survive what machines do, and keys that see everything that changes a result."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cli
from bench.harness.cache import ModelCache
from bench.harness.store import append_record, record_line, read_records

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

TINY = """\
name: tiny
seeds: [0]
methods: [finetune]
experiments:
  - dataset: {dataset}
    arch: smallcnn
    forget_classes: [[2], [3]]
    train: {{epochs: 1, batch_size: 64}}
    method_params: {{finetune: {{epochs: 1}}}}
"""

KILLER_PLUGIN = '''
import os, signal
from dataclasses import dataclass
from methods import UnlearningMethod, register_method

@register_method("{name}")
@dataclass(kw_only=True)
class Killer(UnlearningMethod):
    """Kills its own process on forget class 3, as the out-of-memory killer would."""
    needs = frozenset({{"forget"}})
    marker: int = {marker}

    def unlearn(self, model, task):
        if 3 in task.forget_classes:
            os.kill(os.getpid(), signal.SIGKILL)
        return model
'''


def _grid(folder: Path, dataset: str = "digits", extra: str = "") -> Path:
    path = folder / "grid.yaml"
    path.write_text(TINY.format(dataset=dataset) + extra)
    return path


def _run(folder: Path, *args: str, monkeypatch) -> int:
    monkeypatch.chdir(folder)
    return cli.main(["--results-dir", "results", "--plots-dir", "plots", "-q", *args])


def _records(folder: Path, name: str = "runs.jsonl") -> list[dict]:
    return list(read_records(folder / "results" / "tiny" / name))


def _computed(folder: Path, before: int) -> list[dict]:
    return _records(folder)[before:]


# ------------------------------------------------------------------ store and cache


def test_lines_that_are_not_records_are_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "runs.jsonl"
    path.write_text('{}\n[1, 2]\nnot json\n{"cell": "a", "config_hash": "1"}\n')
    assert [r["cell"] for r in read_records(path)] == ["a"]
    assert sum("is not a record" in m for m in caplog.messages) == 3


def test_corrupt_cache_entry_is_moved_aside_with_a_warning(tmp_path, caplog):
    cache = ModelCache(tmp_path)
    model = torch.nn.Linear(2, 2)
    cache.save("k", model, {"x": 1})
    blob = cache.path("k").read_bytes()
    cache.path("k").write_bytes(blob[: len(blob) // 2])
    assert cache.load("k", torch.nn.Linear(2, 2)) is None
    assert not cache.path("k").exists()
    aside = list(tmp_path.glob("k.pt.corrupt-*"))
    assert len(aside) == 1 and any(str(cache.path("k")) in m for m in caplog.messages)
    cache.save("k", model, {"x": 1})  # recomputed entries load again
    assert cache.load("k", torch.nn.Linear(2, 2)) == {"x": 1}


def test_a_cache_entry_of_another_shape_is_recomputed(tmp_path):
    cache = ModelCache(tmp_path)
    cache.save("k", torch.nn.Linear(2, 2), {})
    assert cache.load("k", torch.nn.Linear(3, 2)) is None


def test_a_failed_cache_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from bench.harness import store

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", full_disk)
    with pytest.raises(OSError):
        ModelCache(tmp_path).save("k", torch.nn.Linear(2, 2), {})
    assert list(tmp_path.iterdir()) == []


def test_take_batches_holds_only_the_current_batch():
    from methods.mixing import take_batches

    class Fresh:
        def __iter__(self):
            for _ in range(3):
                yield torch.zeros(4), torch.zeros(1)

    stream = take_batches(Fresh(), 7)
    refs = []
    for _ in range(7):
        x, _y = next(stream)
        refs.append(weakref.ref(x))
        del x, _y
        assert all(r() is None for r in refs[:-1])
    assert next(stream, None) is None


# ------------------------------------------------------------------ keys


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images)
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())


def _fake_mnist(folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", 200), ("t10k", 100)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        _write_idx(folder, images, labels, prefix)
    return folder


def test_another_data_root_retrains_and_switching_back_computes_nothing(tmp_path, monkeypatch):
    a, b = _fake_mnist(tmp_path / "A", 1), _fake_mnist(tmp_path / "B", 2)
    _grid(tmp_path, dataset="mnist")
    assert _run(tmp_path, "--grid", "grid.yaml", "--data-root", str(a), monkeypatch=monkeypatch) == 0
    first = _records(tmp_path)
    assert _run(tmp_path, "--grid", "grid.yaml", "--data-root", str(b), monkeypatch=monkeypatch) == 0
    second = _computed(tmp_path, len(first))
    assert len(second) == len(first) == 4
    assert {r["data_fingerprint"] for r in first}.isdisjoint({r["data_fingerprint"] for r in second})
    assert [r["acc_retain_test"] for r in first] != [r["acc_retain_test"] for r in second]
    assert _run(tmp_path, "--grid", "grid.yaml", "--data-root", str(a), monkeypatch=monkeypatch) == 0
    assert len(_records(tmp_path)) == 2 * len(first)


def test_a_method_whose_code_changed_is_recomputed(tmp_path, monkeypatch, clean_registry):
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER_PLUGIN.format(name="noop_v", marker=1).replace(
        "if 3 in task.forget_classes", "if False"))
    _grid(tmp_path, extra="")
    args = ["--grid", "grid.yaml", "--plugin", str(plugin), "--methods", "noop_v", "--jobs", "1"]
    assert _run(tmp_path, *args, monkeypatch=monkeypatch) == 0
    first = len(_records(tmp_path))
    assert _run(tmp_path, *args, monkeypatch=monkeypatch) == 0
    assert len(_records(tmp_path)) == first  # unchanged code: nothing new
    # Same class and parameters, edited body: a new process loads the new code.
    plugin.write_text(plugin.read_text().replace("return model", "return model  # edited"))
    code = ("import sys; from bench import cli; sys.exit(cli.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "--results-dir", "results", "--plots-dir",
                           "plots", "-q", *args], cwd=tmp_path, env=ENV, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    new = _computed(tmp_path, first)
    assert sorted(r["method"] for r in new) == ["noop_v", "noop_v"]
    assert {r["code_version"] for r in new}.isdisjoint(
        {r["code_version"] for r in _records(tmp_path)[:first] if r["method"] == "noop_v"})


def test_jobs_do_not_change_results(tmp_path, monkeypatch):
    per_run = []
    for jobs in ("1", "2"):
        folder = tmp_path / jobs
        folder.mkdir()
        _grid(folder)
        assert _run(folder, "--grid", "grid.yaml", "--jobs", jobs, monkeypatch=monkeypatch) == 0
        per_run.append({r["cell"]: {k: r[k] for k in ("acc_forget_test", "acc_retain_test",
                                                         "acc_forget_train", "acc_retain_train",
                                                         "mia", "config_hash")}
                        for r in _records(folder)})
    assert per_run[0] == per_run[1]


# ------------------------------------------------------------------ faults


def test_a_dead_worker_becomes_an_error_record_and_the_grid_goes_on(tmp_path, monkeypatch,
                                                                    clean_registry):
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER_PLUGIN.format(name="killer", marker=1))
    _grid(tmp_path)
    code = _run(tmp_path, "--grid", "grid.yaml", "--plugin", str(plugin), "--methods",
                "finetune,killer", "--jobs", "2", monkeypatch=monkeypatch)
    assert code == 1
    errors = _records(tmp_path, "errors.jsonl")
    assert [e["cell"] for e in errors] == ["digits/smallcnn/3/killer/0"]
    assert "worker process" in errors[0]["error"]
    expected = [f"digits/smallcnn/{c}/{m}/0" for c in (2, 3) for m in ("finetune", "original")]
    assert sorted(r["cell"] for r in _records(tmp_path)) == sorted(
        [*expected, "digits/smallcnn/2/killer/0"])


def _default_sigint() -> None:
    # A non-interactive shell starts background jobs with SIGINT ignored, and Python keeps an
    # ignored SIGINT instead of raising KeyboardInterrupt: CI runs the suite that way.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run_bench.py"), "--results-dir",
                             "results", "--plots-dir", "plots", *args], cwd=folder, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=_default_sigint)  # noqa: PLW1509 (one signal call)


def test_two_concurrent_runs_compute_each_cell_once(tmp_path):
    _grid(tmp_path)
    runs = [_start(tmp_path, "--grid", "grid.yaml", "--jobs", "1") for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    cells = [r["cell"] for r in _records(tmp_path)]
    assert len(cells) == len(set(cells)) == 4
    assert any("holds" in err for _, err in outputs)  # the second one waited for the lock


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# Ctrl-C reaches the whole process group; a `kill` or a batch scheduler's SIGTERM reaches only
# the parent, which must still take its worker processes down with it.
@pytest.mark.parametrize(("sig", "group", "code"), [(signal.SIGINT, True, 130),
                                                    (signal.SIGTERM, False, 143)])
def test_an_interrupt_ends_with_one_line_keeps_finished_records_and_no_worker(tmp_path, sig,
                                                                            group, code):
    # A method that stalls on forget class 3 keeps the grid running until the interrupt
    # arrives: with fast cells the grid could otherwise finish first and exit 0.
    plugin = tmp_path / "sleeper.py"
    plugin.write_text(KILLER_PLUGIN.format(name="sleeper", marker=1).replace(
        "import os, signal", "import os, signal, time").replace(
        "os.kill(os.getpid(), signal.SIGKILL)", "time.sleep(120)"))
    _grid(tmp_path)
    proc = _start(tmp_path, "--grid", "grid.yaml", "--jobs", "2", "--plugin", str(plugin),
                  "--methods", "sleeper")
    runs = tmp_path / "results" / "tiny" / "runs.jsonl"
    deadline = time.monotonic() + 300
    while not (runs.exists() and runs.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    (os.killpg if group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("run_bench.py: interrupted")
    kept = list(read_records(runs))
    assert kept and all("acc_forget_test" in r for r in kept)
    deadline = time.monotonic() + 15   # the sleeping worker would outlive it by minutes
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "a worker process outlived the interrupted run"
        time.sleep(0.1)


@pytest.mark.parametrize("flag", ["--results-dir", "--plots-dir", "--cache-dir"])
def test_an_output_path_on_a_file_is_bad_input_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                   flag):
    _grid(tmp_path)
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    args = {"--results-dir": "results", "--plots-dir": "plots", flag: "afile"}
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main(["--grid", "grid.yaml", "-q", *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0] and "afile" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_read_only_results_dir_is_bad_input(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    _grid(tmp_path)
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--grid", "grid.yaml", "--results-dir", "ro", "-q"]) == 2


def test_the_alias_bomb_fails_fast(tmp_path, monkeypatch, capsys):
    levels = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\n")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    assert cli.main(["--grid", "bomb.yaml"]) == 2
    assert time.perf_counter() - start < 5
    assert "aliases" in capsys.readouterr().err


def test_a_large_grid_file_is_refused_unread(tmp_path, monkeypatch, capsys):
    (tmp_path / "big.yaml").write_text("name: big\n" + "# padding\n" * 200_000)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--grid", "big.yaml"]) == 2
    assert "larger than" in capsys.readouterr().err


def test_render_only_skips_stale_records_and_says_so(tmp_path, monkeypatch, caplog):
    _grid(tmp_path)
    assert _run(tmp_path, "--grid", "grid.yaml", "--jobs", "1", monkeypatch=monkeypatch) == 0
    runs = tmp_path / "results" / "tiny" / "runs.jsonl"
    record = _records(tmp_path)[-1]
    append_record(runs, {**record, "config_hash": "made-by-other-code", "acc_retain_test": -1.0})
    caplog.clear()
    assert _run(tmp_path, "--grid", "grid.yaml", "--render-only", monkeypatch=monkeypatch) == 0
    assert any("skipped 1 stale record" in m for m in caplog.messages)
    summary = (tmp_path / "results" / "tiny" / "summary.csv").read_text()
    assert "-1.0" not in summary


def test_prune_stale_keeps_exactly_the_records_rendering_uses(tmp_path, monkeypatch, capsys):
    _grid(tmp_path)
    assert _run(tmp_path, "--grid", "grid.yaml", "--jobs", "1", monkeypatch=monkeypatch) == 0
    runs = tmp_path / "results" / "tiny" / "runs.jsonl"
    current = runs.read_text()
    first = _records(tmp_path)[0]
    append_record(runs, {**first, "config_hash": "made-by-other-code"})
    append_record(runs, {**first, "acc_retain_test": -2.0})   # a newer record of the same cell
    assert _run(tmp_path, "--grid", "grid.yaml", "--prune-stale", monkeypatch=monkeypatch) == 2
    assert "--render-only" in capsys.readouterr().err
    assert _run(tmp_path, "--grid", "grid.yaml", "--render-only", "--prune-stale",
                monkeypatch=monkeypatch) == 0
    assert "removed 2 stale record(s)" in capsys.readouterr().out
    # The older duplicate goes; the newest record of each cell stays, in stored order.
    assert runs.read_text() == "".join(current.splitlines(keepends=True)[1:]) + record_line(
        {**first, "acc_retain_test": -2.0})
    pruned = runs.read_text()
    assert _run(tmp_path, "--grid", "grid.yaml", "--render-only", "--prune-stale",
                monkeypatch=monkeypatch) == 0
    assert "removed 0 stale record(s)" in capsys.readouterr().out
    assert runs.read_text() == pruned


def test_a_plugin_runtime_fault_stays_a_cell_error(tmp_path, monkeypatch, clean_registry):
    plugin = tmp_path / "raiser.py"
    plugin.write_text(textwrap.dedent('''
        from methods import UnlearningMethod, register_method

        @register_method("raiser")
        class Raiser(UnlearningMethod):
            """Raises at run time."""
            needs = frozenset({"forget"})

            def unlearn(self, model, task):
                raise RuntimeError("boom")
    '''))
    _grid(tmp_path)
    code = _run(tmp_path, "--grid", "grid.yaml", "--plugin", str(plugin), "--methods",
                "finetune,raiser", "--jobs", "1", monkeypatch=monkeypatch)
    assert code == 1
    assert {e["cell"] for e in _records(tmp_path, "errors.jsonl")} == {
        "digits/smallcnn/2/raiser/0", "digits/smallcnn/3/raiser/0"}
    assert len(_records(tmp_path)) == 4
