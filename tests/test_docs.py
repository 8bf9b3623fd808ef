"""Every ```python block of the README and of docs/ runs as written.

Each file's blocks run in order in one namespace, as a reader pasting them one after the other
would, in a fresh directory (blocks that write plots write there), in a child process run as
``__main__`` (a Dask LocalCluster's workers re-import it).  Blocks fenced as console, bash or
text are not run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FILES = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
FENCE = re.compile(r"^```(\w*)\s*$")

RUNNER = r'''
import json, sys, traceback


def main():
    ns = {"__name__": "__main__"}
    for where, code in json.load(open(sys.argv[1])):
        try:
            exec(compile(code, where, "exec"), ns)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED: {where}\n{code}")
            sys.exit(1)


if __name__ == "__main__":
    main()
'''


def python_blocks(path: Path) -> list:
    """[(where, code)] of the ```python blocks of a markdown file."""
    out, lang, start, body = [], None, 0, []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and lang is None:
            lang, start, body = m.group(1).lower(), i, []
        elif line.startswith("```") and lang is not None:
            if lang in ("python", "py"):
                out.append((f"{path.name}:{start}", "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def test_the_docs_have_code_to_run():
    assert sum(len(python_blocks(p)) for p in FILES) >= 10


@pytest.mark.parametrize("path", [p for p in FILES if python_blocks(p)], ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(path, tmp_path):
    (tmp_path / "blocks.json").write_text(json.dumps(python_blocks(path)))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(REPO)] + [os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "runner.py", "blocks.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
