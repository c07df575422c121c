"""The paper and fashion grids, their cost estimates, ImageNet starting weights, subsampling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PAPER_METHODS

from bench import cli
from bench.data import subsample_per_class
from bench.data.digits import load_digits
from bench.errors import BenchInputError
from bench.harness import cost
from bench.harness.builtin_grids import BUILTIN_GRIDS
from bench.harness.cells import grid_cells, original_key
from bench.harness.config import RunConfig
from bench.harness.execute import ensure_original
from bench.harness.grid import load_grid, parse_grid
from bench.models import build_model

# The rows of the paper's table (seeds/pbu-slides.txt): (dataset, model, forget class).
PAPER_ROWS = {
    *((d, a, c) for d, archs, classes in (
        ("mnist", ("resnet34", "densenet121", "convnext_large"), (2, 6, 8)),
        ("cifar100", ("resnet50", "densenet121", "convnext_large"), (1, 3, 8)),
        ("food101", ("resnet50", "densenet121"), (10, 30, 50)),
        ("food101", ("convnext_large",), (20, 40, 60)),
    ) for a in archs for c in classes),
}


def test_paper_dry_run_lists_the_tables_rows_times_methods_times_seeds(tmp_path, monkeypatch,
                                                                      capsys):
    # In-process: test_cli runs a dry run as a real process.
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--grid", "paper", "--dry-run", "--results-dir", "results"]) == 0
    stdout = capsys.readouterr().out
    lines = [line.split() for line in stdout.splitlines() if line.startswith("todo")]
    keys = [line[1] for line in lines]
    assert len(keys) == len(set(keys)) == 27 * 7 * 3  # + original and the logit_mask reference
    rows = {(d, a, int(c)) for d, a, c, _, _ in (k.split("/") for k in keys)}
    assert rows == PAPER_ROWS
    for row in PAPER_ROWS:
        for seed in range(3):
            for label in ["original", *PAPER_METHODS, "logit_mask"]:
                assert f"{row[0]}/{row[1]}/{row[2]}/{label}/{seed}" in keys
    assert all(line[-1] in ("TFLOP", "PFLOP") for line in lines)  # every cell has a cost
    assert "567 cells, 567 to run: about" in stdout
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_paper_grid_recipes():
    paper = load_grid("paper")
    by_dataset = {e.dataset: e for e in paper.experiments}
    mnist = by_dataset["mnist"].train
    assert (mnist.optimizer, mnist.lr, mnist.batch_size, mnist.epochs) == ("adam", 1e-4, 48, 10)
    assert by_dataset["mnist"].pretrained is None
    assert by_dataset["cifar100"].pretrained == by_dataset["food101"].pretrained == "imagenet"


def test_cost_grows_with_the_work_a_cell_does():
    exp = load_grid("quick").experiments[0]

    def flops(label: str, **params) -> float:
        resolved = {**exp.params.get(label, {}), **params}
        return cost.cell_flops(experiment=exp, forget_classes=(2,), method=label,
                               params=resolved)

    forward = cost.forward_flops("smallcnn", num_classes=10, in_channels=1, image_size=8)
    assert 1e6 < forward < 1e8
    # Training the original (15 epochs over 1,257 images) dwarfs evaluating it.
    assert flops("original") > 15 * 3 * 1257 * forward
    assert flops("finetune", epochs=20) > flops("finetune", epochs=10)
    assert flops("pbu", fisher="exact") > flops("pbu", fisher="mc")
    assert cost.cell_flops(experiment=exp, forget_classes=(2,), method="original", params={},
                           trains=False) < flops("original") / 10


def test_a_method_without_an_estimate_costs_unknown(clean_registry):
    from methods import UnlearningMethod, register_method

    @register_method("no_estimate")
    class NoEstimate(UnlearningMethod):
        """No estimate."""

        def unlearn(self, model, task):
            return model

    exp = load_grid("quick").experiments[0]
    assert cost.cell_flops(experiment=exp, forget_classes=(2,), method="no_estimate",
                           params={}) is None


def test_fashion_grid_is_subsampled():
    fashion = load_grid("fashion")
    assert {e.arch for e in fashion.experiments} == {"smallcnn", "resnet18"}
    assert all(e.forget_classes == ((2,), (6,), (8,)) for e in fashion.experiments)
    assert fashion.seeds == (0, 1, 2)
    assert all(e.train_per_class and e.test_per_class for e in fashion.experiments)


def test_subsample_per_class_is_stratified_seeded_and_in_memory():
    data = load_digits()
    small = subsample_per_class(data, train_per_class=20, test_per_class=5, seed=3)
    assert np.bincount(small.train_targets).tolist() == [20] * 10
    assert np.bincount(small.test_targets).tolist() == [5] * 10
    x, y = small.train.tensors
    assert torch.equal(y, torch.as_tensor(small.train_targets))
    # The images are the original ones with their labels, not reshuffled pairs.
    originals = {tuple(img.flatten().tolist()): int(lbl) for img, lbl in
                 zip(data.train.tensors[0], data.train.tensors[1])}
    assert all(originals[tuple(img.flatten().tolist())] == int(lbl) for img, lbl in zip(x, y))
    again = subsample_per_class(data, train_per_class=20, test_per_class=5, seed=3)
    other = subsample_per_class(data, train_per_class=20, test_per_class=5, seed=4)
    assert torch.equal(again.train.tensors[0], x)
    assert not torch.equal(other.train.tensors[0], x)
    untouched = subsample_per_class(data, train_per_class=None, test_per_class=5, seed=3)
    assert len(untouched.train_targets) == len(data.train_targets)


def test_subsampling_is_part_of_the_cache_keys():
    raw = BUILTIN_GRIDS["quick"]
    base = parse_grid({**raw, "experiments": [{**raw["experiments"][0]}]})
    capped = parse_grid({**raw, "experiments": [{**raw["experiments"][0],
                                                 "train_per_class": 50}]})
    cell = grid_cells(base)[1]
    capped_cell = grid_cells(capped)[1]
    assert original_key(cell) != original_key(capped_cell)
    assert cell.key == capped_cell.key and cell.config_hash != capped_cell.config_hash


@pytest.mark.parametrize(("value", "message"), [
    (0, "greater than 0"), (-3, "greater than 0"), ("many", "valid integer"),
    (2.5, "fractional part"),
    (True, "not a boolean"),
])
def test_bad_subsample_cap_is_a_clear_error(value, message):
    raw = BUILTIN_GRIDS["quick"]
    with pytest.raises(BenchInputError) as info:
        parse_grid({**raw, "experiments": [{**raw["experiments"][0],
                                            "train_per_class": value}]})
    assert str(info.value).startswith(
        f"grid: experiments[0].train_per_class = {value!r}: ")
    assert message in str(info.value)


def _fake_hub(tmp_path: Path, monkeypatch, arch: str) -> dict[str, torch.Tensor]:
    """Put a random 'ImageNet' file where torchvision would cache the real one."""
    from urllib.parse import urlparse

    from torchvision import models as tv

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tv.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    path.parent.mkdir(parents=True)
    torch.manual_seed(123)
    state = getattr(tv, arch)().state_dict()
    torch.save(state, path)
    return state


def test_imagenet_weights_load_from_the_local_cache(tmp_path, monkeypatch):
    state = _fake_hub(tmp_path, monkeypatch, "resnet18")
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=224,
                        pretrained="imagenet")
    own = model.state_dict()
    assert torch.equal(own["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert torch.equal(own["conv1.weight"], state["conv1.weight"])  # 3-channel 224: kept
    assert own["fc.weight"].shape == (10, 512)  # the head is new
    small = build_model("resnet18", num_classes=10, in_channels=1, image_size=28,
                        pretrained="imagenet")
    assert torch.equal(small.state_dict()["layer1.0.bn1.running_var"],
                       state["layer1.0.bn1.running_var"])
    assert small.conv1.weight.shape == (64, 1, 3, 3)  # rebuilt stem, fresh weights


def test_missing_imagenet_weights_name_the_path_and_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(BenchInputError, match=r"ImageNet weights for resnet50 not found at .*"
                                              r"empty.*resnet50-.*\.pth.*--download"):
        build_model("resnet50", num_classes=10, in_channels=3, image_size=32,
                    pretrained="imagenet")


def test_pretrained_needs_a_torchvision_architecture():
    with pytest.raises(BenchInputError, match="smallcnn' has no ImageNet weights"):
        build_model("smallcnn", num_classes=10, in_channels=1, image_size=28,
                    pretrained="imagenet")
    with pytest.raises(BenchInputError, match="pretrained 'coco'; allowed: imagenet"):
        build_model("resnet18", num_classes=10, in_channels=1, image_size=28,
                    pretrained="coco")


def test_a_grid_with_pretrained_weights_trains_from_them(tmp_path, monkeypatch):
    """End to end through the harness: the original starts from the cached ImageNet file."""
    state = _fake_hub(tmp_path, monkeypatch, "resnet18")
    raw = {"name": "pre", "seeds": [0], "methods": ["finetune"],
           "experiments": [{"dataset": "digits", "arch": "resnet18", "forget_classes": [[2]],
                            "pretrained": "imagenet", "train_per_class": 4,
                            "test_per_class": 2, "train": {"epochs": 1, "lr": 1e-9}}]}
    grid = parse_grid(raw)
    cfg = RunConfig(results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    model, _ = ensure_original(grid_cells(grid)[0], cfg)
    # lr 1e-9: the trained weights are still (almost exactly) the ImageNet ones.
    assert torch.allclose(model.state_dict()["layer4.1.conv2.weight"],
                          state["layer4.1.conv2.weight"], atol=1e-6)
