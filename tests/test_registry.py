"""Method registry: registration, lookup, duplicate detection and plugin loading."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import methods
from methods import (
    PluginError,
    UnlearningMethod,
    get_method,
    list_methods,
    load_plugins,
    register_method,
    registry,
)

PAPER_METHODS = {"retrain", "finetune", "fast_effective", "bad_teaching", "pbu"}

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
    assert PAPER_METHODS <= set(names)
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
    assert Path(registry._where(get_method("dup_name"))).name.startswith("first_plugin.py")


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


@pytest.mark.parametrize("bad", ["", "has space", "dash-name", "dot.name"])
def test_method_names_must_be_identifiers(bad, clean_registry):
    with pytest.raises(PluginError):
        register_method(bad)


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
