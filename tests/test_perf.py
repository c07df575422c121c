"""The throughput benchmark: which rows it times and that it reports them."""
from __future__ import annotations

import pytest

from bench import perf, perf_throughput


def test_throughput_rows_are_the_grids_distinct_dataset_architecture_pairs():
    rows = perf_throughput.grid_rows("paper")
    assert {(r.dataset, r.arch) for r in rows} == {
        ("mnist", "resnet34"), ("mnist", "densenet121"), ("mnist", "convnext_large"),
        ("cifar100", "resnet50"), ("cifar100", "densenet121"), ("cifar100", "convnext_large"),
        ("food101", "resnet50"), ("food101", "densenet121"), ("food101", "convnext_large")}
    assert len(rows) == 9
    assert {r.batch for r in rows if r.dataset == "mnist"} == {48}  # the MNIST recipe's batch


def test_throughput_reports_every_row_against_the_measured_peak(capsys):
    assert perf.main(["throughput", "--grid", "quick", "--device", "cpu", "--steps", "1",
                      "--warmup", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("digits"))
    fields = row.split()
    assert fields[1] == "smallcnn" and fields[2] == "64"
    train, plain, eval_ = (float(fields[i].replace(",", "")) for i in (3, 4, 6))
    assert train > 0 and plain > 0 and eval_ > 0
    tflops, fraction = float(fields[-2]), float(fields[-1].rstrip("%")) / 100
    assert out[-1].startswith("measured matmul peak: ")
    peak = float(out[-1].split()[-2])
    assert tflops > 0 and peak > 0
    # The printed fraction is the achieved rate over the peak printed below it (both rounded).
    assert fraction == pytest.approx(tflops / peak, rel=0.02, abs=0.002)


def test_throughput_rejects_an_architecture_outside_the_grid(capsys):
    with pytest.raises(SystemExit) as exc:
        perf.main(["throughput", "--grid", "quick", "--archs", "resnet50"])
    assert exc.value.code == 2
    assert "--archs resnet50 not in grid 'quick'; it has smallcnn" in capsys.readouterr().err
