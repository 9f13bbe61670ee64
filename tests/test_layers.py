"""The layering of tsq/, checked on the source (issue 10): the rooms stay separate.

- Sans-IO modules (codec, sessions, engine, serial frames) import nothing that does I/O: no
  asyncio, sockets, serial ports, threads, subprocesses, aioquic, clocks, files or the I/O packages.
- The engine (tsq/sync) knows nothing of sessions, QUIC, the gateway or the bridge.
- Production code never imports the test helpers (tsq/testing).
- No import cycles between tsq modules, and no tsq import hidden inside a function to dodge one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tsq"

SANS_IO = ("tsq.wire", "tsq.ntp", "tsq.session.", "tsq.sync.", "tsq.bridge.frames", "tsq.bridge.feasible",
           "tsq.bridge.device", "tsq.bridge.status", "tsq.bridge.links", "tsq.status")
IO_MODULES = ("asyncio", "socket", "select", "selectors", "serial", "subprocess", "threading",
              "multiprocessing", "aioquic", "tsq.clock", "tsq._pyclock", "tsq._fastclock", "tsq._kerneltime",
              "tsq.quic", "tsq.gateway", "tsq.bridge.port", "tsq.bridge.service", "tsq.bridge.cli",
              "tsq.bridge.portinfo", "tsq.bridge.driver", "tsq.bridge.readprobe",
              "tsq.fieldlog", "tsq.outputs", "tsq.testing", "tsq.demo", "ctypes", "fcntl", "termios")
ENGINE_MAY_NOT = ("tsq.session", "tsq.quic", "tsq.gateway", "tsq.bridge", "tsq.demo", "tsq.outputs")
# Command-line entry points may load a subcommand's modules lazily, so `tsq status` does not import
# the whole gateway and a gateway does not import the demo or the plotting stack (start-up time and
# RSS on a Pi), and the report may load its numpy-based modules only when it computes with them
# (numpy is an optional extra). Nowhere else: a tsq import inside a function is a cycle being dodged.
# The gateway loads its engine runner (and with it QUIC) only when it has servers.
LAZY_ALLOWED = {"tsq.cli", "tsq.bridge.cli", "tsq.report", "tsq.report_stats", "tsq.gateway.app"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> Tuple[Set[str], List[str]]:
    """(modules imported at run time, tsq modules imported inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    found: Set[str] = set()
    nested: List[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only
            names: List[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            for name in names:
                found.add(name)
                if in_function and name.startswith("tsq"):
                    nested.append(f"{name} (line {child.lineno})")
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found, nested


def _all_modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


MODULES = _all_modules()


def _tsq_deps(name: str) -> Set[str]:
    deps = set()
    for imp in _imports(MODULES[name])[0]:
        if imp in MODULES and imp != name:
            deps.add(imp)
    return deps


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(SANS_IO) or n in SANS_IO))
def test_sans_io_modules_import_no_io(name: str) -> None:
    bad = sorted(i for i in _imports(MODULES[name])[0]
                 if any(i == m or i.startswith(m + ".") for m in IO_MODULES))
    assert not bad, f"{name} (sans-IO) imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("tsq.sync")))
def test_engine_knows_nothing_of_the_layers_above(name: str) -> None:
    bad = sorted(i for i in _imports(MODULES[name])[0] if i.startswith(ENGINE_MAY_NOT))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("tsq.testing")))
def test_production_imports_no_test_helpers_and_nothing_inside_functions(name: str) -> None:
    found, nested = _imports(MODULES[name])
    assert not [i for i in found if i.startswith("tsq.testing")], f"{name} imports tsq.testing"
    if name not in LAZY_ALLOWED:
        assert not nested, f"{name} imports tsq modules inside functions: {nested}"


def test_no_import_cycles() -> None:
    graph = {name: _tsq_deps(name) for name in MODULES}
    state: Dict[str, int] = {}
    stack: List[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


# What each subcommand may not load when it is the one run (`tsq COMMAND ...` registers only its
# own parser): the boot-time helpers stay small, and a gateway carries no demo, report or server.
HEAVY = ("aioquic", "numpy", "matplotlib", "tsq.demo", "tsq.report", "tsq.quic.server")
NOT_LOADED_BY = {
    "status": HEAVY, "waitsync": HEAVY, "pin": ("numpy", "tsq.demo", "tsq.report", "tsq.quic.server"),
    "gateway": ("numpy", "matplotlib", "tsq.demo", "tsq.report", "tsq.quic.server"),
    "bridge": ("numpy", "matplotlib", "tsq.report", "tsq.quic.server"),
}


@pytest.mark.parametrize("command", sorted(NOT_LOADED_BY))
def test_a_subcommand_loads_only_its_own_modules(command: str) -> None:
    code = ("import sys, tsq.cli\n"
            f"tsq.cli.build_parser({command!r}).parse_args([{command!r}, '--help'])\n")
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print(' '.join(sorted(sys.modules))))\n" + code)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr          # --help exits 0 after printing the usage
    assert f"usage: tsq {command}" in out.stdout
    loaded = set(out.stdout.split())
    bad = sorted(m for m in loaded for p in NOT_LOADED_BY[command] if m == p or m.startswith(p + "."))
    assert not bad, f"`tsq {command}` loads {bad}"


def test_the_full_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from tsq import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name, _ in cli.COMMANDS)
    assert cli.main([]) == 2                        # no command: the help, and a usage error
    with pytest.raises(SystemExit) as info:
        cli.main(["nonsense"])                      # an unknown command: argparse's one-line error
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
