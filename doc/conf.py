"""Sphinx configuration of the dipy_ext documentation."""

from pathlib import Path
import shutil

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


def png_scraper(block, block_vars, gallery_conf):
    """Collect the PNG files an example block wrote, as DIPY examples do.

    The examples save their figures with dipy_ext.viz (closed matplotlib
    figures), so the default matplotlib scraper would miss them.
    """
    from sphinx_gallery.scrapers import figure_rst

    src_dir = Path(block_vars["src_file"]).parent
    seen = block_vars.setdefault("_seen_pngs", set())
    new = sorted(p for p in src_dir.glob("*.png") if p not in seen)
    paths = []
    for png, target in zip(new, block_vars["image_path_iterator"]):
        shutil.copy(png, target)
        seen.add(png)
        paths.append(target)
    return figure_rst(paths, gallery_conf["src_dir"])


sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/example_",
    "image_scrapers": (png_scraper,),
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
}
