"""The shape the README promises: the plugin contract stands alone, modules stay readable."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 400


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_methods_import_nothing_from_bench():
    offenders = {str(p.relative_to(REPO)): sorted(m for m in _imported_modules(p)
                                                  if m == "bench" or m.startswith("bench."))
                 for p in (REPO / "methods").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_methods_import_with_bench_unavailable():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'bench' or name.startswith('bench.'):\n"
            "            raise ImportError('bench is blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import methods\n"
            "assert 'bench' not in sys.modules\n"
            "print(len(methods.list_methods()))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 6


def test_no_source_module_is_over_the_limit():
    long = {str(p.relative_to(REPO)): n for folder in ("bench", "methods", "perf")
            for p in (REPO / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES
            and "fisher" not in p.relative_to(REPO).parts}  # the engine may be longer
    assert long == {}


def test_bench_has_the_flow_subpackages():
    for name in ("data", "harness", "report"):
        assert (REPO / "bench" / name / "__init__.py").is_file(), name
