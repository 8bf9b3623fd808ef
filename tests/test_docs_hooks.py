"""tools/docs_hooks.py, the mkdocs hook that runs the tutorials at build time: what each
python block prints is inserted after it, the figures become site files, a failing block
fails the build."""
import importlib.util
import types
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)

PAGE = """# T

```python
print("one")
```

```text
shown, not run
```

```python
x = 2
```

```python
import os
os.makedirs("figures", exist_ok=True)
open("figures/f.png", "wb").write(b"png")
print(x + 1)
```
"""


def test_blocks_run_in_one_namespace_and_outputs_are_inserted(tmp_path):
    src = tmp_path / "t.md"
    src.write_text(PAGE)
    outs = hooks._run_page(src, tmp_path / "run")
    assert outs == ["one\n", "", "3\n"]
    assert (tmp_path / "run" / "figures" / "f.png").read_bytes() == b"png"
    hooks._state["outputs"]["tutorials/t.md"] = outs
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="tutorials/t.md"))
    md = hooks.on_page_markdown(PAGE, page, None, None)
    assert md.count("```text") == 3                     # two outputs and the page's own
    assert '```python\nprint("one")\n```\n\n```text\none\n```' in md
    assert "```python\nx = 2\n```\n\n```python" in md     # nothing printed: nothing added
    other = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="guide.md"))
    assert hooks.on_page_markdown(PAGE, other, None, None) == PAGE


def test_a_failing_block_fails_the_build(tmp_path):
    from mkdocs.exceptions import PluginError

    src = tmp_path / "bad.md"
    src.write_text("```python\nraise RuntimeError('boom')\n```\n")
    with pytest.raises(PluginError, match="boom"):
        hooks._run_page(src, tmp_path / "run")


def test_blocks_are_read_as_the_docs_test_reads_them():
    import test_docs

    for p in sorted((ROOT / "docs" / "tutorials").glob("*.md")):
        assert [c for _, c in hooks.python_blocks(p.read_text(), p.name)] == \
            [c for _, c in test_docs.python_blocks(p)]


def test_sphinx_roles_shown_as_code():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_roles", ROOT / "tools" / "griffe_roles.py")
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    text = "see :func:`~pylmem.inference.ddf.coef_table` and :class:`LmerFit`, :mod:`pylmem.io`"
    assert roles.ROLE.sub(roles._plain, text) == "see `coef_table` and `LmerFit`, `pylmem.io`"
