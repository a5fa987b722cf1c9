"""The layering: core/ depends on no app and no web framework; the device agent depends on core only.

Two checks each, because they catch different mistakes: reading every import statement (also the lazy
ones inside functions, which a plain import would not run) and importing every module in a fresh
interpreter where the forbidden packages cannot be imported (which catches a forbidden import made
through another module).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("django", "rest_framework", "channels", "celery")
APPS = ("gunwatch", "accounts", "devices", "detection", "alerts")


def _modules(package: Path) -> list[str]:
    """Dotted names of the package's modules; ``__main__`` is left out because importing it runs the program."""
    names = (".".join(p.relative_to(ROOT).with_suffix("").parts) for p in package.rglob("*.py"))
    return sorted(n.removesuffix(".__init__") for n in names if not n.endswith("__main__"))


def imported_names(path: Path) -> set[str]:
    """Every module named by an import statement in the file, wherever the statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def forbidden_imports(package: Path, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for name in sorted(imported_names(path)):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(package.parent)} imports {name}")
    return found


def import_with_blocked(modules: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Import the modules in a fresh interpreter in which importing any of ``blocked`` raises ImportError."""
    script = f"""
import importlib, importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: this layer must not import it")
        return None
sys.meta_path.insert(0, Block())
for module in {modules!r}:
    importlib.import_module(module)
"""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_checks_see_a_forbidden_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "ok.py").write_text("import numpy\n")
    (package / "bad.py").write_text("def later():\n    from django.conf import settings\n    return settings\n")
    assert forbidden_imports(package, FRAMEWORKS) == ["pkg/bad.py imports django.conf"]
    result = import_with_blocked(["json", "django.conf"], FRAMEWORKS)
    assert result.returncode != 0 and "ImportError: django is blocked" in result.stderr


def test_core_imports_no_framework_and_no_app() -> None:
    assert forbidden_imports(ROOT / "core", FRAMEWORKS + APPS) == []


def test_every_core_module_imports_with_the_frameworks_blocked() -> None:
    result = import_with_blocked(_modules(ROOT / "core"), FRAMEWORKS + APPS)
    assert result.returncode == 0, result.stderr


def test_the_agent_imports_only_itself_and_core() -> None:
    """A Pi gets devices/agent/ and core/ (see devices/agent/README.md): nothing else of the project."""
    found = []
    for path in sorted((ROOT / "devices" / "agent").rglob("*.py")):
        for name in sorted(imported_names(path)):
            top = name.split(".")[0]
            if (
                top in FRAMEWORKS
                or (top in APPS and not name.startswith("devices.agent"))
                or (top == "devices" and name != "devices" and not name.startswith("devices.agent"))
            ):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []


# "devices" itself stays importable (the agent is devices.agent); its Django modules need the blocked frameworks.
@pytest.mark.parametrize(
    "blocked", [(*FRAMEWORKS, "gunwatch", "accounts", "detection", "alerts"), (*FRAMEWORKS, "torch", "sklearn")]
)
def test_the_agent_and_its_features_import_without_django_or_torch(blocked: tuple[str, ...]) -> None:
    modules = [*_modules(ROOT / "devices" / "agent"), "core.audio", "core.features"]
    result = import_with_blocked(modules, blocked)
    assert result.returncode == 0, result.stderr


def test_the_files_the_agent_readme_names_are_enough(tmp_path: Path) -> None:
    """The minimal copy of devices/agent/README.md ("What to copy to the device") runs on its own."""
    files = [
        ROOT / "devices" / "__init__.py",
        *(ROOT / "devices" / "agent").glob("*.py"),
        ROOT / "core" / "__init__.py",
        ROOT / "core" / "audio.py",
        ROOT / "core" / "features.py",
    ]
    for path in files:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    script = (
        "import numpy as np, sys\n"
        "from devices.agent import cli, model\n"
        "from core import features\n"
        "assert 'django' not in sys.modules and all(not m.startswith(('detection', 'alerts')) for m in sys.modules)\n"
        "print(features.windows(np.random.default_rng(0).standard_normal(16000).astype('float32'), 16000,"
        " features.FeatureParams()).shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-E", "-s", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 1, 40, 50)"  # 1 s plus STFT centring: two windows
