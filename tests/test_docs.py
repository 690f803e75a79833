"""The docs' code runs: every ```python block of README.md and docs/*.md, and every `fastadv ...` line of the
README's bash blocks.

Markers, HTML comments on the lines just before a block (invisible when the markdown is rendered):

* ``<!-- not run: WHY -->``: the block is compiled, and every ``fastadv`` name it imports or uses
  (``from fastadv.x import Y``, ``fastadv.X.Y``) must resolve, but it is not run (a GPU, the network, a
  package the tests do not install, minutes of training).
* ``<!-- test with: OLD => NEW; OLD2 => NEW2 -->``: the block runs with these text replacements (smaller
  settings for a test that takes seconds); each OLD must occur in the block, so the marker cannot rot.
* ``<!-- test needs: NAME, ... -->``: what the block reads that it does not make itself: a dataset
  (``mnist``, ...: the test is skipped without it) or ``runs/demo-mnist`` (a tiny MNIST run made here, in
  the temporary folder, with its export ``demo-mnist.pt``).

The blocks of one file run in order in one namespace (a later block may use an earlier one's names), in a
temporary folder.
"""
from __future__ import annotations

import ast
import importlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import fastadv
from fastadv.cli import build_parser, main
from fastadv.data import DataError

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*(not run|test with|test needs):\s*(.*?)\s*-->")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, with the markers on the lines just above each."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        block = Block(path, line, match.group(1), match.group(2))
        above = text[:match.start()].splitlines()
        while above and MARKER.fullmatch(above[-1].strip()):
            kind, value = MARKER.fullmatch(above.pop().strip()).groups()
            if kind == "not run":
                block.not_run = value
            elif kind == "test with":
                block.replace += [tuple(part.split(" => ", 1)) for part in value.split("; ")]
            else:
                block.needs += [n.strip() for n in value.split(",")]
        found.append(block)
    return found


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang == "python"]


def test_markers_parse_and_every_doc_is_read():
    assert {p.name for p in DOCS} >= {"README.md", "EVALUATION.md", "SCHEDULES.md", "RESULTS.md"}
    for path in DOCS:
        text = path.read_text()
        for line in text.splitlines():
            if "<!--" in line and re.search(r"not run|test with|test needs", line):
                assert MARKER.fullmatch(line.strip()), f"{path.name}: malformed marker {line!r}"
        for block in python_blocks(path):
            for old_new in block.replace:
                assert len(old_new) == 2, f"{block.where}: 'test with' needs OLD => NEW, got {old_new}"


# --- names: what a block imports or uses from fastadv resolves ---------------------------------------------

def resolve(dotted: str):
    """The object a dotted fastadv name stands for, importing submodules as ``import a.b`` would."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[:i + 1]))  # ModuleNotFoundError: the name is wrong
    return obj


def fastadv_names(code: str) -> set[str]:
    """Every ``fastadv...`` name the code imports (``import fastadv.x``, ``from fastadv.x import Y``) or uses
    as an attribute chain on a module it imported (``fastadv.load_model``, ``fastadv.models.wrap_model``)."""
    names, aliases = set(), {}
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fastadv":
                    names.add(alias.name)
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "fastadv"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fastadv":
            for alias in node.names:
                names.add(f"{node.module}.{alias.name}")
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in aliases:
                names.add(".".join([aliases[inner.id], *reversed(chain)]))
    return names


def check_names(block: Block) -> None:
    for name in sorted(fastadv_names(block.code)):
        try:
            value = resolve(name)
        except (ImportError, AttributeError) as exc:
            raise AssertionError(f"{block.where}: {name} does not resolve ({exc})") from None
        assert value is not None, f"{block.where}: {name} is None"


def test_names_check_catches_a_wrong_import():
    bad = Block(Path("README.md"), 1, "python", "from fastadv import schedules\n")
    with pytest.raises(AssertionError, match="fastadv.schedules does not resolve"):
        check_names(bad)
    with pytest.raises(AssertionError, match="fastadv.finder"):
        check_names(Block(Path("x.md"), 1, "python", "import fastadv\nfastadv.finder.lr_range_test\n"))
    check_names(Block(Path("x.md"), 1, "python", "import fastadv\nfastadv.models.wrap_model\n"))


INLINE = re.compile(r"`(fastadv(?:\.[A-Za-z_]\w*)+)(?:\(|`)")


def test_fastadv_names_in_the_prose_resolve():
    """`fastadv.x.y` in backticks, in the text as well as the blocks, names something that exists."""
    for path in DOCS:
        for name in sorted(set(INLINE.findall(path.read_text()))):
            try:
                resolve(name)
            except (ImportError, AttributeError) as exc:
                raise AssertionError(f"{path.name}: `{name}` does not resolve ({exc})") from None


# --- running the python blocks -----------------------------------------------------------------------------

def demo_mnist_run(tmp: Path) -> None:
    """``runs/demo-mnist`` and ``demo-mnist.pt`` as `make demo` and the export line make them, but tiny:
    the mnist preset on 2,000 training images for one epoch (a few seconds)."""
    fastadv.train({"preset": "mnist", "epochs": 1, "train_limit": 2000, "eval_size": 100, "final_limit": 200,
                   "final_aa_points": 0, "progress": False, "out_dir": str(tmp / "runs"), "name": "demo-mnist"})
    fastadv.export_checkpoint(tmp / "runs" / "demo-mnist", tmp / "demo-mnist.pt")


def provide(need: str, tmp: Path) -> None:
    if need == "runs/demo-mnist":
        provide("mnist", tmp)
        if not (tmp / "runs" / "demo-mnist").exists():
            demo_mnist_run(tmp)
        return
    try:
        fastadv.load_dataset(need, download=False)
    except DataError as exc:
        pytest.skip(f"{need} not available ({exc}); set FASTADV_DATA")


def runnable(block: Block) -> str:
    code = block.code
    for old, new in block.replace:
        assert old in code, f"{block.where}: 'test with' replaces {old!r}, which the block does not contain"
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    scope: dict = {"__name__": "__doc_block__"}
    ran = 0
    for block in python_blocks(path):
        compiled = compile(block.code, block.where, "exec")  # even a block that is not run is valid Python
        check_names(block)
        if block.not_run:
            continue
        for need in block.needs:
            provide(need, tmp_path)
        exec(compile(runnable(block), block.where, "exec") if block.replace else compiled, scope)
        ran += 1
    if path.name == "README.md":  # the own-loop example and the API quick start, at least
        assert ran >= 2 and "result" in scope and "sched" in scope


# --- the README's CLI lines --------------------------------------------------------------------------------

def cli_lines(path: Path = ROOT / "README.md") -> list[tuple[str, list[str]]]:
    """``(line, argv)`` for every ``fastadv ...`` command in the bash blocks (``torchrun ... -m fastadv ...``
    included), with continuation lines joined and comments dropped."""
    found = []
    for block in blocks(path):
        if block.lang != "bash":
            continue
        for line in block.code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "fastadv" not in words or (words[0] != "fastadv" and words[words.index("fastadv") - 1] != "-m"):
                continue
            found.append((line.split("#")[0].strip(), words[words.index("fastadv") + 1:]))
    return found


def test_readme_has_cli_lines():
    commands = {argv[0] for _, argv in cli_lines() if argv and not argv[0].startswith("-")}
    assert {"train", "eval", "export", "grid", "report"} <= commands


def test_the_cli_check_catches_a_wrong_flag_or_command(capsys):
    for argv in (["train", "--dataset", "mnist", "--epoks", "3"], ["evaluate", "runs/x"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2
    assert main(["train", "--dataset", "mnist", "--method", "fgsm-r", "--dry-run"]) == 2  # a value, not a flag
    assert "fgsm-r" in capsys.readouterr().err


@pytest.mark.parametrize("line,argv", cli_lines(), ids=[line for line, _ in cli_lines()])
def test_readme_cli_line_parses(line, argv, tmp_path, monkeypatch, capsys):
    """Each line parses (subcommand, flags, values); a train line that names no run or file that only the
    reader has runs with --dry-run; `--help` lines print help and exit 0."""
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
        return
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{line!r} does not parse: {capsys.readouterr().err.strip()}") from None
    assert args.command == argv[0]
    if args.command == "train" and not args.resume and (not args.config or (ROOT / args.config).exists()):
        dry = [*argv, "--dry-run"] if "--dry-run" not in argv else argv
        if args.config:
            dry = [str(ROOT / a) if a == args.config else a for a in dry]
        monkeypatch.chdir(tmp_path)
        assert main(dry) == 0, f"{line!r}: {capsys.readouterr().err.strip()}"
        assert '"config"' in capsys.readouterr().out
