"""Show in the gallery the PNG files the examples write, as DIPY's do.

The examples save their figures with dipy_ext.viz (closed matplotlib
figures), so the default matplotlib scraper would miss them. ``mark_start``
runs before each example (a ``reset_modules`` hook) and notes the time;
``png_scraper`` then collects, after each code block, the PNG files written
since then that it has not shown yet.
"""

from pathlib import Path
import shutil
import time

_state = {"start": 0.0, "shown": set()}


def mark_start(gallery_conf, fname, when=None):
    """Remember when an example starts (PNGs older than that are stale)."""
    if when in (None, "before"):
        _state["start"] = time.time()
        _state["shown"] = set()


def png_scraper(block, block_vars, gallery_conf):
    """Copy the new PNGs of the example's folder into the gallery."""
    from sphinx_gallery.scrapers import figure_rst

    folder = Path(block_vars["src_file"]).parent
    new = sorted(
        p
        for p in folder.glob("*.png")
        if p.stat().st_mtime >= _state["start"] and p not in _state["shown"]
    )
    targets = []
    for png, target in zip(new, block_vars["image_path_iterator"]):
        shutil.copy(png, target)
        _state["shown"].add(png)
        targets.append(target)
    return figure_rst(targets, gallery_conf["src_dir"])
