"""The throughput benchmark: which rows it times, and its report's arithmetic on made-up rows."""
from __future__ import annotations

import pytest

from perf import throughput
from perf.__main__ import main as perf_main
from perf.throughput import Row, report


def test_throughput_rows_are_the_grids_distinct_dataset_architecture_pairs():
    rows = throughput.grid_rows("paper")
    assert {(r.dataset, r.arch) for r in rows} == {
        ("mnist", "resnet34"), ("mnist", "densenet121"), ("mnist", "convnext_large"),
        ("cifar100", "resnet50"), ("cifar100", "densenet121"), ("cifar100", "convnext_large"),
        ("food101", "resnet50"), ("food101", "densenet121"), ("food101", "convnext_large")}
    assert len(rows) == 9
    assert {r.batch for r in rows if r.dataset == "mnist"} == {48}  # the MNIST recipe's batch


def measured(*, suite: float, plain: float, eval_: float, flops: float) -> dict[str, float]:
    return {"train_suite": suite, "train_plain": plain, "eval": eval_, "forward_flops": flops}


def test_report_computes_speed_up_achieved_flops_and_fraction_of_peak():
    results = [
        # 1,000 img/s x 3 passes x 1 MFLOP = 3 GFLOP/s = 0.003 TFLOP/s; of 10 GFLOP/s: 30 %.
        (Row(dataset="digits", arch="smallcnn", batch=64),
         measured(suite=1000.0, plain=500.0, eval_=4000.0, flops=1e6)),
        # 2,500 img/s x 3 x 4 GFLOP = 30 TFLOP/s: 300 % of the peak (a bad peak shows as such).
        (Row(dataset="cifar100", arch="resnet50", batch=128),
         measured(suite=2500.0, plain=3125.0, eval_=12345.6, flops=4e9)),
    ]
    lines = report(results, peak=1e10).splitlines()
    assert lines[0].split() == ["dataset", "arch", "batch", "train", "img/s", "plain", "img/s",
                                "speed-up", "eval", "img/s", "TFLOP/s", "of", "peak"]
    assert lines[1].split() == ["digits", "smallcnn", "64", "1,000.0", "500.0", "2.00x",
                                "4,000.0", "0.003", "30.0%"]
    assert lines[2].split() == ["cifar100", "resnet50", "128", "2,500.0", "3,125.0", "0.80x",
                                "12,345.6", "30.000", "300000.0%"]
    assert lines[3] == "measured matmul peak: 0.010 TFLOP/s"
    assert len(lines) == 4


def test_report_fraction_comes_from_the_exact_rates_not_the_printed_ones():
    # 0.0004 TFLOP/s prints as 0.000 and the 0.0009 TFLOP/s peak as 0.001; the fraction is
    # 4/9 of the unrounded values, not 0 % or 40 %.
    results = [(Row(dataset="digits", arch="smallcnn", batch=8),
                measured(suite=400.0, plain=400.0, eval_=1.0, flops=1e6 / 3))]
    row, peak = report(results, peak=0.9e9).splitlines()[1:]
    assert row.split()[-2:] == ["0.000", "44.4%"]
    assert peak == "measured matmul peak: 0.001 TFLOP/s"


def test_report_of_no_rows_is_the_header_and_the_peak():
    assert report([], peak=2.5e12).splitlines()[1:] == ["measured matmul peak: 2.500 TFLOP/s"]


def test_throughput_command_reports_the_measured_rows(monkeypatch, capsys):
    """``python -m perf throughput`` wiring, with the measurements replaced by fixed numbers."""
    timed = []

    def fake_measure(row, *, device, warmup, steps):
        timed.append((row, str(device), warmup, steps))
        return measured(suite=600.0, plain=300.0, eval_=900.0, flops=2e6)

    monkeypatch.setattr(throughput, "matmul_peak", lambda device, **_: 3.6e10)
    monkeypatch.setattr(throughput, "measure_row", fake_measure)
    assert perf_main(["throughput", "--grid", "fashion", "--device", "cpu", "--archs",
                      "smallcnn", "--steps", "2", "--warmup", "0"]) == 0
    assert timed == [(Row(dataset="fashion-mnist", arch="smallcnn", batch=64), "cpu", 0, 2)]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("throughput: grid fashion, cpu, ")
    # 600 img/s x 3 x 2 MFLOP = 3.6 GFLOP/s = 10 % of 36 GFLOP/s.
    assert out[2].split() == ["fashion-mnist", "smallcnn", "64", "600.0", "300.0", "2.00x",
                              "900.0", "0.004", "10.0%"]
    assert out[-1] == "measured matmul peak: 0.036 TFLOP/s"


def test_throughput_rejects_an_architecture_outside_the_grid(capsys):
    with pytest.raises(SystemExit) as exc:
        perf_main(["throughput", "--grid", "quick", "--archs", "resnet50"])
    assert exc.value.code == 2
    assert "--archs resnet50 not in grid 'quick'; it has smallcnn" in capsys.readouterr().err


def test_full_data_grid_is_the_whole_dataset_with_the_fashion_recipe():
    from bench.harness.builtin_grids import BUILTIN_GRIDS
    from perf.full_data import full_data_grid

    grid = full_data_grid(dataset="fashion-mnist", archs=["smallcnn", "pbu_resnet18"],
                          forget_class=6, seed=3)
    assert [m.label for m in grid.methods] == ["retrain", "pbu", "pbu_mc"]
    assert grid.experiments[0].params["pbu_mc"]["fisher"] == "mc"
    assert grid.seeds == (3,)
    fashion = BUILTIN_GRIDS["fashion"]["experiments"][0]["train"]
    for exp, arch in zip(grid.experiments, ["smallcnn", "pbu_resnet18"], strict=True):
        assert exp.arch == arch and exp.forget_classes == ((6,),)
        assert {k: exp.train.as_dict()[k] for k in fashion} == fashion
        assert exp.train_per_class is None and exp.test_per_class is None  # no subsample


def test_full_data_report_gives_pbus_share_of_retraining():
    from perf.full_data import report

    def record(method, time_s, fisher=None):
        return {"arch": "smallcnn", "method": method, "time_s": time_s,
                "timings": {} if fisher is None else {"fisher_s": fisher},
                "acc_forget_test": 1.5, "acc_retain_test": 80.25}

    lines = report([record("pbu", 12.0, fisher=4.0), record("retrain", 480.0),
                    record("original", 500.0)]).splitlines()
    assert lines[1].split() == ["smallcnn", "original", "500.0", "-", "1.50", "80.25"]
    assert lines[3].split() == ["smallcnn", "pbu", "12.0", "4.0", "1.50", "80.25"]
    assert lines[4] == "smallcnn       pbu takes 2.5 % of retraining's time"


def test_full_data_command_runs_the_cells_and_prints_the_ratio(tmp_path, capsys):
    assert perf_main(["full-data", "--dataset", "digits", "--archs", "smallcnn",
                      "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[1:5]] == ["original", "retrain", "pbu", "pbu_mc"]
    assert out[-2].startswith("smallcnn       pbu takes ")
    assert out[-1].startswith("smallcnn       pbu_mc takes ")
    assert (tmp_path / "full-data" / "runs.jsonl").exists()


def test_pbu_step_benchmark_times_the_three_steps_with_the_anchor():
    from perf.pbu_step import pbu_step_benchmark

    result = pbu_step_benchmark(model_name="smallcnn", batch=4, steps=1, device="cpu")
    assert set(result) >= {"fwd+bwd", "fwd+bwd+adam", "pbu step"}
    assert all(v > 0 for k, v in result.items() if k in ("fwd+bwd", "pbu step"))
