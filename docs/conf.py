"""Sphinx configuration of simplepyq's documentation.

Build it offline, warnings as errors (as CI does):

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

The reference is generated from the docstrings (autodoc) and from the command
line's own parser (sphinx-argparse); the benchmark tables are included from
bench/README.md, which bench/run.py writes (myst-parser reads its Markdown).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's simplepyq, and examples/ for includes

import simplepyq  # noqa: E402 (after the checkout is importable)

project = "simplepyq"
author = "the simplepyq authors"
copyright = "the simplepyq authors; Apache-2.0"
release = version = simplepyq.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinxarg.ext",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"simplepyq {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
smartquotes_action = "qe"  # leave "--db" alone: options keep their two hyphens

# -- autodoc: the reference is the docstrings --------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # set_limits(rate_limit=UNCHANGED), not <object ...>
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True}
add_module_names = False
python_use_unqualified_type_names = True

# -- doctest: every snippet marked testcode runs, in a directory of its own --
doctest_global_setup = """
import os as _os
import tempfile as _tempfile
_doc_home = _os.getcwd()
_doc_dir = _tempfile.TemporaryDirectory()
_os.chdir(_doc_dir.name)
"""
doctest_global_cleanup = """
_os.chdir(_doc_home)
_doc_dir.cleanup()
"""
doctest_test_doctest_blocks = ""  # only the testcode blocks run, not ">>>" text

# -- MyST: only to include bench/README.md's generated tables ----------------
myst_enable_extensions: list[str] = []
suppress_warnings = ["myst.header"]
