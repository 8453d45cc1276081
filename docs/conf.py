"""Sphinx configuration: the API reference built from the package's numpydoc docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (CI does, with warnings
as errors, so a docstring that does not render fails the build).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
import serket_pyro  # noqa: E402

project = "serket-pyro"
author = "serket-pyro developers"
release = version = serket_pyro.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3  # the README's links to its own sections
napoleon_google_docstring = True  # a few older docstrings still use Args:
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # NamedTuple fields: documented once, by their Attributes section
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
nitpicky = False
# a numpydoc References section may list works the text does not cite by number
# and napoleon turns words of a type line ("rows") into cross-references that may match two
# re-exported attributes
suppress_warnings = ["ref.footnote", "ref.python"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
