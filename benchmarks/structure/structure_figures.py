"""Structure figures of the library code (issue 24), from the source alone: nothing is imported or run.

    .venv/bin/python benchmarks/structure/structure_figures.py [--json]

Counts, over training/, export/, serving/ and clients/: project imports made inside functions (each
one a start-up cost dodged or a circle hidden), functions over 80 lines, comparisons with the task
strings "classification"/"segmentation" (what a task description should replace), `raise ValueError`
(what a project error class should replace), and the longest modules. Import circles and the layer
order are checked by tests/test_structure.py.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("training", "export", "serving", "clients")
TASKS = ("classification", "segmentation")


def figures(root: Path = ROOT) -> dict:
    files = [p for layer in LAYERS for p in sorted((root / layer).glob("*.py"))]
    inner, long_functions, task_compares, value_errors, lines = [], [], [], 0, {}
    for path in files:
        name = str(path.relative_to(root))
        text = path.read_text()
        lines[name] = text.count("\n")
        value_errors += text.count("raise ValueError")
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("dnc."):
                        inner.append(f"{name}:{sub.lineno} {sub.module}")
            if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in TASKS
                                                     for c in [node.left, *node.comparators]):
                task_compares.append(f"{name}:{node.lineno}")
    longest = sorted(lines.items(), key=lambda kv: -kv[1])[:3]
    return {"files": len(files), "imports_inside_functions": len(inner), "functions_over_80_lines": long_functions,
            "task_string_comparisons": len(task_compares),
            "files_with_task_comparisons": len({c.split(":")[0] for c in task_compares}),
            "raise_value_error": value_errors, "longest_modules": longest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    f = figures()
    if a.json:
        print(json.dumps(f, indent=1))
        return
    for key, value in f.items():
        print(f"{key}: {value if not isinstance(value, list) or len(value) > 3 or not value else value}")


if __name__ == "__main__":
    main()
