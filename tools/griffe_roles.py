"""A griffe extension for the API reference: the docstrings' Sphinx roles
(``:func:`~pylmem.x.f```, ``:class:`LmerFit```, ``:mod:`pylmem.postfit```) shown as code, the
``~`` form by its last name, as Sphinx would show them (mkdocstrings renders Markdown)."""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|obj|data|exc):`(~?)([^`]+)`")


def _plain(m: re.Match) -> str:
    tilde, target = m.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring once it is loaded."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_plain, obj.docstring.value)
