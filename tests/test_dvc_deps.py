"""dvc.yaml's deps cover every module a stage runs: each stage script's transitive damc_core imports (read from the
source with ast, lazy imports inside functions included) must each lie under one of the stage's deps, or editing
that module would leave the stage's outputs stale under `dvc repro`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

PACKAGE = "damc_core"


def module_file(root: Path, module: str) -> Path | None:
    """The file of a dotted damc_core module (a .py file or a package's __init__.py), relative to root."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_modules(source: Path, root: Path) -> set[str]:
    """Dotted names of the damc_core modules one file imports: `import damc_core.x`, `from damc_core.x import y`
    (y itself when it is a submodule) and relative imports inside the package."""
    tree = ast.parse((root / source).read_text(encoding="utf-8"))
    package = ".".join(source.with_suffix("").parts[:-1]) if source.name != "__init__.py" else ".".join(
        source.parent.parts)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names if module_file(root, f"{base}.{alias.name}")}
    return names


def transitive_files(script: Path, root: Path) -> set[Path]:
    """Every damc_core file that running `script` can import, with the __init__.py of each package on the way."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        current = pending.pop()
        for module in imported_modules(current, root):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
                path = module_file(root, ".".join(parts[:depth]))
                if path is not None and path not in seen:
                    seen.add(path)
                    pending.append(path)
    return seen


def stage_code_deps(root: Path) -> dict[str, tuple[Path, list[str]]]:
    """Stage name -> (its script, its deps as written), for every stage whose command runs a stages/ script."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    result = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        match = re.search(r"stages/\w+\.py", body["cmd"])
        assert match, f"stage {name}: its command runs no stages/ script: {body['cmd']}"
        result[name] = (Path(match.group()), [str(dep) for dep in body.get("deps", [])])
    return result


def uncovered(script: Path, deps: list[str], root: Path) -> list[str]:
    """The files `script` runs (itself included) that no dep covers (a dep covers itself and what is under it)."""
    covered = [dep.rstrip("/") for dep in deps]
    needed = {script} | transitive_files(script, root)
    return sorted(str(path) for path in needed
                  if not any(str(path) == dep or str(path).startswith(dep + "/") for dep in covered))


def test_the_import_walk_follows_lazy_relative_and_package_imports(tmp_path):
    (tmp_path / PACKAGE / "sub").mkdir(parents=True)
    files = {
        "stages/run.py": "import json\nfrom damc_core.a import thing\n",
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/a.py": "def f():\n    from damc_core.sub import deep\n",
        f"{PACKAGE}/sub/__init__.py": "from . import helper\n",
        f"{PACKAGE}/sub/deep.py": "import damc_core.c\n",
        f"{PACKAGE}/sub/helper.py": "",
        f"{PACKAGE}/c.py": "",
        f"{PACKAGE}/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = {str(path) for path in transitive_files(Path("stages/run.py"), tmp_path)}
    assert found == {f"{PACKAGE}/{name}" for name in ("__init__.py", "a.py", "sub/__init__.py", "sub/deep.py",
                                                      "sub/helper.py", "c.py")}
    assert uncovered(Path("stages/run.py"), ["stages/run.py", f"{PACKAGE}/sub", f"{PACKAGE}/__init__.py",
                                             f"{PACKAGE}/a.py"], tmp_path) == [f"{PACKAGE}/c.py"]


@pytest.mark.parametrize("stage", sorted(stage_code_deps(Path(__file__).resolve().parent.parent)))
def test_every_imported_module_is_a_dependency_of_its_stage(stage, repo_root):
    script, deps = stage_code_deps(repo_root)[stage]
    missing = uncovered(script, deps, repo_root)
    assert not missing, f"dvc.yaml stage {stage} imports these but does not list them (or a folder above) in deps: " \
                        f"{missing}"


def unused(script: Path, deps: list[str], root: Path) -> list[str]:
    """The damc_core deps that cover none of the files `script` runs: editing them would rerun the stage for nothing."""
    needed = [str(path) for path in transitive_files(script, root)]
    return [dep for dep in deps if dep.split("/")[0] == PACKAGE
            and not any(path == dep.rstrip("/") or path.startswith(dep.rstrip("/") + "/") for path in needed)]


def test_a_dep_on_a_module_the_stage_never_imports_is_found(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / PACKAGE / "sub").mkdir(parents=True)
    for name, text in {"stages/run.py": "from damc_core import a\n", f"{PACKAGE}/__init__.py": "",
                       f"{PACKAGE}/a.py": "", f"{PACKAGE}/b.py": "", f"{PACKAGE}/sub/__init__.py": ""}.items():
        (tmp_path / name).write_text(text)
    deps = [f"{PACKAGE}/__init__.py", f"{PACKAGE}/a.py", f"{PACKAGE}/b.py", f"{PACKAGE}/sub"]
    assert unused(Path("stages/run.py"), deps, tmp_path) == [f"{PACKAGE}/b.py", f"{PACKAGE}/sub"]


@pytest.mark.parametrize("stage", sorted(stage_code_deps(Path(__file__).resolve().parent.parent)))
def test_no_stage_depends_on_a_module_it_never_imports(stage, repo_root):
    script, deps = stage_code_deps(repo_root)[stage]
    extra = unused(script, deps, repo_root)
    assert not extra, f"dvc.yaml stage {stage} lists deps it never imports (editing them reruns it for nothing): {extra}"
