"""Registries (methods, datasets, architectures): registration, lookup, duplicate detection,
and plugin loading."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from helpers import PAPER_METHODS

import methods
from bench.data.registry import DATASETS, register_dataset
from bench.errors import BenchInputError
from bench.models import ARCHITECTURES, register_arch
from methods import (
    METHODS,
    PluginError,
    Registry,
    RegistryError,
    UnlearningMethod,
    create_method,
    get_method,
    list_methods,
    load_plugins,
    register_method,
    registry,
)

PLUGIN_TEMPLATE = """\
from methods import UnlearningMethod, register_method


@register_method("{name}")
class Plugin(UnlearningMethod):
    \"\"\"A test plugin.\"\"\"

    needs = frozenset({{"forget"}})

    def unlearn(self, model, task):
        return model
"""
# Lines of the decorator and the class statement in PLUGIN_TEMPLATE (1-based).
DECORATOR_LINE, CLASS_LINE = 4, 5


def write_plugin(folder: Path, filename: str, body: str) -> Path:
    path = folder / filename
    path.write_text(textwrap.dedent(body))
    return path


def test_register_get_and_list(clean_registry):
    @register_method("spy_registry_test")
    class Spy(UnlearningMethod):
        def unlearn(self, model, task):
            return model

    assert get_method("spy_registry_test") is Spy
    assert Spy.name == "spy_registry_test"
    names = list_methods()
    assert "spy_registry_test" in names
    assert set(PAPER_METHODS) <= set(names)
    assert names == sorted(names)


def test_same_class_registered_twice_is_harmless(clean_registry):
    class Spy(UnlearningMethod):
        def unlearn(self, model, task):
            return model

    register_method("spy_twice")(Spy)
    register_method("spy_twice")(Spy)
    assert get_method("spy_twice") is Spy


def test_registering_a_name_twice_names_both_places(tmp_path, clean_registry):
    first = write_plugin(tmp_path, "first_plugin.py", PLUGIN_TEMPLATE.format(name="dup_name"))
    second = write_plugin(tmp_path, "second_plugin.py", PLUGIN_TEMPLATE.format(name="dup_name"))
    load_plugins([first], use_entry_points=False)
    with pytest.raises(PluginError) as info:
        load_plugins([second], use_entry_points=False)
    message = str(info.value)
    assert "dup_name" in message
    for path in (first, second):
        match = re.search(re.escape(str(path)) + r":(\d+)", message)
        assert match, f"{path} with a line number not in {message!r}"
        assert int(match.group(1)) in (DECORATOR_LINE, CLASS_LINE)
    # The first registration survives the failed second one.
    assert Path(registry.where(get_method("dup_name"))).name.startswith("first_plugin.py")


def test_duplicate_of_a_builtin_names_the_builtin_file(tmp_path, clean_registry):
    clash = write_plugin(tmp_path, "clash.py", PLUGIN_TEMPLATE.format(name="pbu"))
    with pytest.raises(PluginError) as info:
        load_plugins([clash], use_entry_points=False)
    message = str(info.value)
    assert re.search(r"methods[/\\]pbu\.py:\d+", message), message
    assert re.search(re.escape(str(clash)) + r":\d+", message), message
    assert get_method("pbu").__module__ == "methods.pbu"


def test_load_plugins_registers_a_file_outside_the_repo(tmp_path, clean_registry):
    assert not str(tmp_path.resolve()).startswith(str(Path(methods.__file__).parents[1]))
    path = write_plugin(tmp_path, "outside.py", PLUGIN_TEMPLATE.format(name="outside_method"))
    assert "outside_method" not in list_methods()
    load_plugins([path], use_entry_points=False)
    cls = get_method("outside_method")
    assert issubclass(cls, UnlearningMethod)
    assert cls.needs == frozenset({"forget"})
    load_plugins([path], use_entry_points=False)  # loading again is a no-op, not a duplicate


def test_plugin_that_fails_to_import_is_a_plugin_error(tmp_path, clean_registry):
    path = write_plugin(tmp_path, "broken_plugin.py", "import does_not_exist_anywhere\n")
    with pytest.raises(PluginError) as info:
        load_plugins([path], use_entry_points=False)
    assert "broken_plugin.py" in str(info.value)
    assert "does_not_exist_anywhere" in str(info.value)


def test_plugin_with_syntax_error_is_a_plugin_error(tmp_path, clean_registry):
    path = write_plugin(tmp_path, "syntax_plugin.py", "def broken(:\n")
    with pytest.raises(PluginError, match="syntax_plugin.py"):
        load_plugins([path], use_entry_points=False)


def test_missing_plugin_file_is_a_plugin_error(tmp_path, clean_registry):
    with pytest.raises(PluginError, match="no_such_plugin.py"):
        load_plugins([tmp_path / "no_such_plugin.py"], use_entry_points=False)


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(PluginError) as info:
        get_method("no_such_method")
    message = str(info.value)
    assert "no_such_method" in message
    for name in list_methods():
        assert name in message


class _Plain(UnlearningMethod):
    def unlearn(self, model, task):
        return model


@pytest.mark.parametrize("bad", ["", "has space", "dot.name", "slash/name"])
def test_method_names_must_be_identifiers(bad, clean_registry):
    with pytest.raises(PluginError, match="identifier"):
        register_method(bad)(_Plain)
    assert bad not in METHODS


@pytest.mark.parametrize("needs", [frozenset({"labels"}), {"forget"}, None])
def test_register_method_checks_the_declared_needs(needs, clean_registry):
    class Needy(_Plain):
        pass

    Needy.needs = needs
    with pytest.raises(PluginError, match="needs="):
        register_method("needy")(Needy)
    assert "needy" not in METHODS


def test_register_method_rejects_a_class_without_unlearn(clean_registry):
    class NoUnlearn(UnlearningMethod):
        pass

    with pytest.raises(PluginError, match="unlearn"):
        register_method("no_unlearn")(NoUnlearn)


def test_create_method_applies_params_over_the_defaults():
    pbu = create_method("pbu", lr=3e-5)
    assert isinstance(pbu, methods.PBU)
    assert pbu.params() == {**methods.PBU.default_params(), "lr": 3e-5}
    with pytest.raises(ValueError, match="batchnorm"):
        create_method("pbu", batchnorm="frozen")


def test_method_labels_come_from_registration(clean_registry):
    assert METHODS.label("pbu") == "PBU"
    assert METHODS.label("not_registered") == "not_registered"
    register_method("labelled", label="Labelled method")(_Plain)
    assert METHODS.label("labelled") == "Labelled method"


# ---------------------------------------------------------------- the Registry type


def test_registry_names_filter_with_shell_patterns():
    reg = Registry("thing")
    for name in ("pbu", "pbu_official", "finetune", "pbu-x"):
        reg.add(name, object())
    assert reg.names() == ["finetune", "pbu", "pbu-x", "pbu_official"]
    assert reg.names("pbu*") == ["pbu", "pbu-x", "pbu_official"]
    assert reg.names("*tune") == ["finetune"]
    assert reg.names("nothing*") == []
    assert list(reg) == reg.names() and "pbu" in reg and "pbu_" not in reg


def test_registry_duplicate_name_raises_and_keeps_the_first():
    reg = Registry("thing")
    first, second = object(), object()
    reg.add("a", first, label="A")
    reg.add("a", first, label="A")  # the same object again is not a duplicate
    with pytest.raises(RegistryError, match="thing 'a' registered twice"):
        reg.add("a", second)
    assert reg.get("a") is first and reg.label("a") == "A"


def test_registry_unknown_name_lists_the_available_ones():
    reg = Registry("gadget", error=BenchInputError)
    reg.add("b", 2)
    reg.add("a", 1)
    with pytest.raises(BenchInputError, match=r"unknown gadget 'c'; available: a, b"):
        reg.get("c")


def test_registry_snapshot_and_restore():
    reg = Registry("thing")
    reg.add("kept", 1)
    saved = reg.snapshot()
    reg.add("added", 2)
    saved["vandal"] = None  # changing the snapshot does not change the registry
    assert "vandal" not in reg
    reg.restore(saved)
    assert reg.names() == ["kept", "vandal"]


def test_clean_registry_fixture_forgets_test_registrations(clean_registry):
    assert clean_registry is METHODS
    register_method("throwaway_method")(_Plain)
    assert "throwaway_method" in list_methods()


def test_previous_tests_registrations_are_gone():
    # Runs after the test above (pytest keeps file order).
    assert "throwaway_method" not in list_methods()


def test_duplicate_dataset_and_architecture_names_are_bad_input():
    loader = DATASETS.get("digits").load
    with pytest.raises(BenchInputError, match="dataset 'digits' registered twice"):
        register_dataset("digits", num_classes=10, in_channels=1, image_size=8)(
            lambda **_: None)
    assert DATASETS.get("digits").load is loader
    builder = ARCHITECTURES.get("smallcnn")
    with pytest.raises(BenchInputError, match="architecture 'smallcnn' registered twice"):
        register_arch("smallcnn")(lambda **_: None)
    assert ARCHITECTURES.get("smallcnn") is builder


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch, clean_registry):
    path = write_plugin(tmp_path, "ep_plugin.py", PLUGIN_TEMPLATE.format(name="ep_method"))

    class FakeEntryPoint:
        name, value = "ep_method", "ep_plugin:Plugin"

        def load(self):
            registry.load_plugin_file(path)

    def fake_entry_points(*, group):
        return [FakeEntryPoint()] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    load_plugins([], use_entry_points=False)
    assert "ep_method" not in list_methods()
    load_plugins([])
    assert "ep_method" in list_methods()


def test_failing_entry_point_is_a_plugin_error(monkeypatch, clean_registry):
    class BrokenEntryPoint:
        name, value = "broken_ep", "nowhere:Thing"

        def load(self):
            raise ImportError("nowhere")

    monkeypatch.setattr(registry, "entry_points", lambda *, group: [BrokenEntryPoint()])
    with pytest.raises(PluginError, match="broken_ep"):
        load_plugins([])
