"""Structure figures of the library code (issue 24), from the source alone: nothing is imported or run.

    .venv/bin/python benchmarks/structure/structure_figures.py [--json]

Over core/, training/, export/, serving/ and clients/:
- project imports made inside functions, each with whether the module it imports loads an optional heavy
  dependency at import time (torch, onnx, onnxruntime, tritonclient, ray, av, matplotlib, tensorrt, directly
  or through the project modules it imports): those are the only ones the house style allows;
- functions over 80 lines;
- comparisons with the task strings "classification"/"segmentation", and dicts keyed by them, outside
  core/tasks.py (the task description) and core/preprocess.py (standalone by design: it is copied into
  model repositories and runs without the package, so it cannot import the description);
- `raise ValueError` (a project error class says what is the user's doing) and project errors raised;
- the longest modules;
- the path of one checkpoint through `dnc export`: a static walk of the calls from export/cli.py's
  cmd_export into project functions (calls resolved through each module's imports), counting the
  functions reached, the files they are in, and the returns to a file the walk had left (a climb back).
Import circles and the layer order are checked by tests/test_structure.py.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "training", "export", "serving", "clients")
TASKS = ("classification", "segmentation")
EXEMPT = ("core/tasks.py", "core/preprocess.py")
HEAVY = ("torch", "onnx", "onnxruntime", "tritonclient", "ray", "av", "matplotlib", "tensorrt", "safetensors")


def _modules(root: Path) -> dict[str, Path]:
    """'dnc.layer.module' -> file."""
    return {f"dnc.{layer}.{p.stem}": p for layer in LAYERS for p in sorted((root / layer).glob("*.py"))
            if p.stem != "__init__"}


def _top_imports(tree: ast.Module) -> list[str]:
    """Modules imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _heavy(modules: dict[str, Path], trees: dict[str, ast.Module]) -> dict[str, bool]:
    """Whether importing each project module loads a heavy dependency (transitively, top-level imports)."""
    memo: dict[str, bool] = {}

    def heavy(name: str, seen: frozenset) -> bool:
        if name in memo:
            return memo[name]
        if name not in trees or name in seen:
            return False
        found = False
        for imp in _top_imports(trees[name]):
            if imp.split(".")[0] in HEAVY or (imp in trees and heavy(imp, seen | {name})):
                found = True
                break
        memo[name] = found
        return found

    return {name: heavy(name, frozenset()) for name in modules}


def _task_strings(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in TASKS
                                                 for c in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value in TASKS for k in node.keys):
            lines.append(node.lineno)
    return lines


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """name -> def, for module-level functions and methods (Class.method)."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            out[node.name] = node
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{sub.name}"] = sub
    return out


def _names(tree: ast.Module, module: str, modules: dict) -> dict[str, tuple[str, str | None]]:
    """Local name -> (project module, function or None for a module alias), from all imports of a file."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dnc."):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out[a.asname or a.name] = (full, None) if full in modules else (node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:
                    out[a.asname or a.name] = (a.name, None)
    return out


def checkpoint_path(modules: dict[str, Path], trees: dict[str, ast.Module], root: Path) -> dict:
    """The static walk from export/cli.py cmd_export (see the module docstring)."""
    defs = {m: _functions(t) for m, t in trees.items()}
    names = {m: _names(t, m, modules) for m, t in trees.items()}
    order: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def resolve(module: str, call: ast.Call, cls: str | None) -> tuple[str, str] | None:
        f = call.func
        if isinstance(f, ast.Name):
            if f.id in defs[module]:
                return module, f.id
            target = names[module].get(f.id)
            if target and target[1] is not None and target[0] in defs and target[1] in defs[target[0]]:
                return target[0], target[1]
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if f.value.id == "self" and cls and f"{cls}.{f.attr}" in defs[module]:
                return module, f"{cls}.{f.attr}"
            target = names[module].get(f.value.id)
            if target and target[1] is None and target[0] in defs and f.attr in defs[target[0]]:
                return target[0], f.attr
        return None

    def walk(module: str, name: str) -> None:
        if (module, name) in seen:
            return
        seen.add((module, name))
        order.append((module, name))
        node = defs[module][name]
        cls = name.split(".")[0] if "." in name or isinstance(node, ast.ClassDef) else None
        body = [node] if not isinstance(node, ast.ClassDef) else [
            s for s in node.body if isinstance(s, ast.FunctionDef)]
        for part in body:
            for sub in ast.walk(part):
                if isinstance(sub, ast.Call):
                    target = resolve(module, sub, cls)
                    if target:
                        walk(*target)

    walk("dnc.export.cli", "cmd_export")
    files = [str(modules[m].relative_to(root)) for m, _ in order]
    climbs, left = 0, set()
    for prev, cur in zip(files, files[1:], strict=False):
        if cur != prev:
            left.add(prev)
            climbs += cur in left
    return {"stops": len(order), "files": len(set(files)), "climbs_back": climbs}


def figures(root: Path = ROOT) -> dict:
    modules = _modules(root)
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in modules.items()}
    heavy = _heavy(modules, trees)
    inner, long_functions, task_strings, value_errors, project_errors, lines = [], [], [], 0, 0, {}
    for module, path in modules.items():
        name = str(path.relative_to(root))
        text = path.read_text()
        lines[name] = text.count("\n")
        value_errors += text.count("raise ValueError")
        project_errors += sum(text.count(f"raise {e}") for e in (
            "InputError", "DataError", "VideoError", "OutputError", "ExportError", "CentroidSetError",
            "FolderError", "SwapError", "ServerError", "ClientError", "JobError", "DivergedError", "DNCError"))
        for node in ast.walk(trees[module]):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("dnc."):
                        targets = [f"{sub.module}.{a.name}" for a in sub.names]
                        target = next((t for t in targets if t in modules), sub.module)
                        inner.append({"at": f"{name}:{sub.lineno}", "imports": target,
                                      "heavy": heavy.get(target, False)})
        if name not in EXEMPT:
            task_strings += [f"{name}:{n}" for n in _task_strings(trees[module])]
    inner = list({(i["at"], i["imports"]): i for i in inner}.values())
    longest = sorted(lines.items(), key=lambda kv: -kv[1])[:3]
    return {"files": len(modules), "imports_inside_functions": len(inner),
            "imports_inside_functions_not_heavy": [f"{i['at']} {i['imports']}" for i in inner if not i["heavy"]],
            "imports_inside_functions_heavy": sorted({i["imports"] for i in inner if i["heavy"]}),
            "functions_over_80_lines": long_functions,
            "task_string_comparisons": len(task_strings), "task_string_places": task_strings,
            "raise_value_error": value_errors, "raise_project_errors": project_errors,
            "longest_modules": longest, "checkpoint_through_export": checkpoint_path(modules, trees, root)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    f = figures()
    if a.json:
        print(json.dumps(f, indent=1))
        return
    for key, value in f.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
