"""Layer 9, files and the command line.

Data files by path (``readers``: ``read_table``), the ``pylmem`` command (``cli``) and its
Dask path (``cli_dask``).

May import: every layer, and ``pylmem.datasets``.
"""
