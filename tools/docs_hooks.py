"""mkdocs hooks: the tutorials are executed at build time.

Every page under ``docs/tutorials/`` is run as ``tests/test_docs.py`` runs it: its ```python
blocks in order, in one namespace, in a fresh directory, in a child process (``__main__``).
What each block prints is inserted after it as a ```text block, and the PNG files the
blocks write under ``figures/`` become files of the site beside the page
(``tutorials/figures/NAME.png``), so ``![...](figures/NAME.png)`` in the page shows the
figure made by this build.  A block that fails fails the build.

Pages run two at a time; set ``PYLMEM_DOCS_JOBS`` to change that.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

FENCE = re.compile(r"^```(\w*)\s*$")
TUTORIALS = "tutorials/"
REPO = Path(__file__).resolve().parent.parent

RUNNER = r'''
import contextlib, io, json, sys, traceback


def main():
    ns = {"__name__": "__main__"}
    outputs = []
    for where, code in json.load(open(sys.argv[1])):
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(code, where, "exec"), ns)
        except BaseException:
            sys.stderr.write(buf.getvalue())
            traceback.print_exc()
            print(f"FAILED: {where}", file=sys.stderr)
            sys.exit(1)
        outputs.append(buf.getvalue())
    json.dump(outputs, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
'''

_state: dict = {"outputs": {}, "tmp": None}


def python_blocks(text: str, name: str) -> list:
    """[(where, code)] of the ```python blocks of a page (as tests/test_docs.py reads them)."""
    out, lang, start, body = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m and lang is None:
            lang, start, body = m.group(1).lower(), i, []
        elif line.startswith("```") and lang is not None:
            if lang in ("python", "py"):
                out.append((f"{name}:{start}", "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def _run_page(src: Path, workdir: Path) -> list:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "blocks.json").write_text(json.dumps(python_blocks(src.read_text(), src.name)))
    (workdir / "runner.py").write_text(RUNNER)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "runner.py", "blocks.json", "outputs.json"],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
                         check=False)
    if res.returncode != 0:
        raise PluginError(f"tutorial {src.name} failed:\n{res.stderr[-4000:]}")
    return json.loads((workdir / "outputs.json").read_text())


def on_files(files, config):
    """Run every tutorial page; add the figures it wrote to the site's files."""
    tmp = Path(tempfile.mkdtemp(prefix="pylmem-docs-"))
    _state["tmp"] = tmp
    pages = [f for f in files.documentation_pages() if f.src_uri.startswith(TUTORIALS)]
    jobs = max(1, int(os.environ.get("PYLMEM_DOCS_JOBS", "2")))
    with ThreadPoolExecutor(jobs) as pool:
        work = {f.src_uri: pool.submit(_run_page, Path(f.abs_src_path), tmp / Path(f.src_uri).stem)
                for f in pages}
        for uri, fut in work.items():
            _state["outputs"][uri] = fut.result()
    for f in pages:
        figdir = tmp / Path(f.src_uri).stem / "figures"
        if figdir.is_dir():
            for png in sorted(figdir.glob("*.png")):
                uri = f"{Path(f.src_uri).parent.as_posix()}/figures/{png.name}"
                files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Insert what each python block printed after the block."""
    outputs = _state["outputs"].get(page.file.src_uri)
    if outputs is None:
        return markdown
    lines, out, lang, k = markdown.splitlines(), [], None, 0
    for line in lines:
        out.append(line)
        m = FENCE.match(line)
        if m and lang is None:
            lang = m.group(1).lower()
        elif line.startswith("```") and lang is not None:
            if lang in ("python", "py"):
                text = outputs[k].rstrip("\n")
                k += 1
                if text:
                    out += ["", "```text", text, "```"]
            lang = None
    return "\n".join(out) + "\n"


def on_post_build(config):
    if _state["tmp"] is not None:
        shutil.rmtree(_state["tmp"], ignore_errors=True)
