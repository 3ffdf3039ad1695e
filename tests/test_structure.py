"""The package's shape (issue 12): imports run one way, and no module reads another's private
names."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mlx_mobilemoe"


def _modules() -> dict:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (f, ast.parse(f.read_text()))
    return out


def _imports(name: str, f: Path, node) -> list:
    """(alias, module) pairs of package modules an import statement binds."""
    mods = _modules_cache
    pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        return [(a.asname or a.name, a.name) for a in node.names if a.name in mods]
    base = pkg
    for _ in range(max(node.level - 1, 0)):
        base = base.rsplit(".", 1)[0]
    mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
    out = []
    for a in node.names:
        full = f"{mod}.{a.name}"
        out.append((a.asname or a.name, full if full in mods else mod))
    return [(alias, m) for alias, m in out if m in mods]


_modules_cache = _modules()


def test_no_import_circles():
    graph = {n: {m for node in ast.walk(t) if isinstance(node, (ast.Import, ast.ImportFrom))
                 for _, m in _imports(n, f, node) if m != n and not n.startswith(m + ".")}
             for n, (f, t) in _modules_cache.items()}  # a package's own __init__ aside
    state: dict = {}

    def visit(n, path):
        state[n] = "open"
        for m in graph[n]:
            assert state.get(m) != "open", "import circle: " + " -> ".join(path + [m])
            if m not in state:
                visit(m, path + [m])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])


def test_no_module_reads_another_modules_private_names():
    bad = []
    for n, (f, t) in _modules_cache.items():
        aliases = {alias for node in ast.walk(t) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias, m in _imports(n, f, node) if m != n}
        for node in ast.walk(t):
            if isinstance(node, ast.ImportFrom) and node.level != 1 and any(
                    a.name.startswith("_") and not a.name.startswith("__") for a in node.names):
                bad.append(f"{f.name}:{node.lineno} imports a private name")  # siblings may
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{f.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not bad, bad
