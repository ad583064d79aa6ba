"""Sphinx configuration of the dipy_ext documentation."""

from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).parent / "sphinxext"))

project = "dipy_ext"
author = "dipy_ext developers"
copyright = "2026, dipy_ext developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py.md5"]
html_theme = "alabaster"


sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/example_",
    "image_scrapers": ("png_scraper.png_scraper",),
    "reset_modules": ("matplotlib", "png_scraper.mark_start"),
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
}
