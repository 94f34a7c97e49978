"""Every documented snippet works as printed: README.md and docs/*.md.

Python blocks run, as written, in a fresh process in a scratch folder, in page order. Bash
blocks: every ``shoal ...`` command must parse with the CLI's own parser, and ``train``
commands must resolve to a valid config (algorithm, env id, every ``key=value``); a bash
block marked ``<!-- docs-test: run ... -->`` on the line above it is run as written first
(the page's Python snippets read the run directories it makes).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<marker><!-- docs-test: run[^\n]*-->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```", re.M | re.S)


def _blocks(page: Path) -> list[tuple[str, str, bool]]:
    """``(language, code, marked to run)`` for each fenced block of ``page``."""
    return [(m["lang"], m["body"], bool(m["marker"])) for m in FENCE.finditer(page.read_text())]


def _shoal_commands(code: str) -> list[list[str]]:
    """The argument lists of every ``shoal ...`` command in a bash block (``&&`` chains included)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        cmd: list[str] = []
        for t in [*tokens, "&&"]:
            if t in ("&&", ";", "||"):
                if cmd and cmd[0] == "shoal":
                    out.append(cmd[1:])
                cmd = []
            else:
                cmd.append(t)
    return out


COMMANDS = [pytest.param(argv, id=f"{page.name}:{' '.join(argv)[:60]}")
            for page in PAGES for lang, code, _ in _blocks(page) if lang == "bash" for argv in _shoal_commands(code)]


def test_the_docs_have_snippets():
    assert len(COMMANDS) >= 15
    assert sum(lang == "python" for page in PAGES for lang, _, _ in _blocks(page)) >= 3


@pytest.mark.parametrize("argv", COMMANDS)
def test_documented_shoal_commands_parse_and_resolve(argv):
    from shoal.cli import parse_args
    from shoal.config import parse_overrides
    from shoal.envs.make import check_env_id
    from shoal.run.resolve import resolve

    try:
        a = parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`shoal {' '.join(argv)}` does not parse (exit {e.code})")
    if a.cmd == "train" and not a.resume and a.algo:  # without one, --config names the algorithm (a best.yaml)
        from shoal.envs.games import is_game

        if not is_game(a.env):  # board games are not Gymnasium ids; alphazero's builder checks them
            check_env_id(a.env)
        cli_run = {"steps": a.steps, "seed": a.seed, "backend": a.backend, "num_actors": a.num_actors,
                   "ray_address": a.ray_address}
        resolve(a.algo, a.env, a.env, a.config, parse_overrides(a.overrides), cli_run)


# One fresh interpreter per page (imports paid once): marked bash blocks go through the CLI's
# own entry point, each Python block runs in its own empty namespace, so a snippet that forgot
# an import still fails.
_DRIVER = """
import json, sys
from shoal.cli import main
for kind, item in json.load(sys.stdin):
    if kind == "shoal":
        rc = main(item)
        if rc != 0:
            sys.exit(f"`shoal {' '.join(item)}` exited {rc}")
    else:
        exec(compile(item, "<snippet>", "exec"), {"__name__": "__main__"})
"""


def _runnable_sections() -> list[tuple[Path, str, list[tuple[str, object]]]]:
    """``(page, section, steps)``: a docs page's snippets to run, in order, in one interpreter.

    A page under ``docs/`` is one tutorial (later snippets use what earlier ones made), so it
    runs whole. README.md's ``## `` sections stand alone, so each runs apart, which keeps each
    test within its time limit.
    """
    out = []
    for page in PAGES:
        text = page.read_text()
        heads = [(m.start(), m.group(1)) for m in re.finditer(r"^## (.+)$", text, re.M)] if page.name == "README.md" else []
        groups: dict[str, list[tuple[str, object]]] = {}
        for m in FENCE.finditer(text):
            head = next((h for pos, h in reversed(heads) if pos < m.start()), "(whole page)")
            if m["lang"] == "bash" and m["marker"]:
                groups.setdefault(head, []).extend(("shoal", argv) for argv in _shoal_commands(m["body"]))
            elif m["lang"] == "python":
                groups.setdefault(head, []).append(("python", m["body"]))
        out += [(page, head, steps) for head, steps in groups.items() if steps]
    return out


@pytest.mark.parametrize("page,section,steps", [pytest.param(*s, id=f"{s[0].name}:{s[1][:40]}") for s in _runnable_sections()])
def test_page_snippets_run_as_written(page, section, steps, tmp_path):
    import json

    (tmp_path / "docs" / "img").mkdir(parents=True)  # a snippet that redraws a docs figure writes it there (run from the repo root)
    p = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps(steps), capture_output=True, text=True, cwd=tmp_path,
                       timeout=110)
    assert p.returncode == 0, f"{page.name} ({section}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"


def test_architecture_topology_table_says_what_exists():
    from shoal.topologies import TOPOLOGIES

    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Topologies", 1)[1].split("\n\n", 1)[0]
    rows = [r.strip("|").split("|") for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    existing = set()
    for row in rows:
        status = row[-1].strip()
        if status == "**planned**":
            assert row[0].strip().lower() not in TOPOLOGIES, row[0]
        else:
            name = re.fullmatch(r"exists: `(\w+)`", status)
            assert name, f"status of {row[0].strip()!r} must be 'exists: `name`' or '**planned**', got {status!r}"
            existing.add(name[1])
    assert existing == set(TOPOLOGIES)  # every topology in the code is in the table, and nothing else claims to be


def test_paths_named_in_the_docs_exist():
    for page in PAGES:
        for path in re.findall(r"`((?:shoal|tests|benchmarks|docs)/[\w/.-]+\.(?:py|yaml|md|png))`", page.read_text()):
            if "ALGO" in path or "<" in path:
                continue
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"
