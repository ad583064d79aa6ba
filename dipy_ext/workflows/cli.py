"""Console scripts of dipy_ext.

DIPY's own ``cli_flows`` table is closed to other packages, so this module
keeps ours: each console script named in setup.py points at :func:`run`,
which finds its flow from the program name and hands it to DIPY's
``run_flow`` (which adds --force, --out_strat, --mix_names, --log_level and
--log_file). Errors the user can fix are printed as one line, with a
non-zero exit status, instead of a traceback.
"""

import importlib
from pathlib import Path
import sys

FLOWS = {
    "dipy_synthesize_brain": ("dipy_ext.workflows.synthesis", "SynthesizeBrainFlow"),
    "dipy_train_vqvae3d": ("dipy_ext.workflows.training", "TrainVQVAE3DFlow"),
    "dipy_train_latent_diffusion3d": (
        "dipy_ext.workflows.training",
        "TrainLatentDiffusion3DFlow",
    ),
    "dipy_evaluate_synthesis": (
        "dipy_ext.workflows.evaluation",
        "EvaluateSynthesisFlow",
    ),
    "dipy_fetch_nfbs": ("dipy_ext.workflows.fetch", "FetchNFBSFlow"),
}


def _log_through_root(argv):
    """Send DIPY's logger (which our flows use) through the root logger, at
    the level ``--log_level`` asks for.

    ``run_flow`` gives ``--log_file`` to the root logger only, while DIPY's
    logger keeps its own INFO handler on stdout, and it reads
    ``--log_level`` through a table Python 3 no longer has (always INFO):
    ``--log_level WARNING`` would not silence our messages, nor would
    ``--log_file`` receive them.
    """
    import logging

    level = logging.INFO
    if "--log_level" in argv[:-1]:
        asked = argv[argv.index("--log_level") + 1]
        level = logging.getLevelName(asked.upper())
        if not isinstance(level, int):
            raise ValueError(
                f"--log_level should be one of CRITICAL, ERROR, WARNING, INFO, "
                f"DEBUG, NOTSET, got '{asked}'"
            )
    dipy_logger = logging.getLogger("dipy")
    dipy_logger.handlers.clear()
    dipy_logger.setLevel(level)
    dipy_logger.propagate = True
    return level


class _Below:
    """A logging filter passing records below a level."""

    def __init__(self, level):
        self.level = level

    def filter(self, record):
        return record.levelno < self.level


def _warnings_to_stderr(configure):
    """DIPY's ``configure_logger``, then warnings and errors moved from
    stdout to stderr (cluster job logs keep them apart; a pipe of stdout
    keeps only the progress messages)."""

    def configured(*args, **kwargs):
        import logging

        configure(*args, **kwargs)
        if kwargs.get("filename"):
            return
        for handler in logging.root.handlers:
            if getattr(handler, "stream", None) is sys.stdout:
                handler.addFilter(_Below(logging.WARNING))
                errors = logging.StreamHandler(sys.stderr)
                errors.setLevel(logging.WARNING)
                errors.setFormatter(handler.formatter)
                logging.root.addHandler(errors)
                return

    return configured


def _refuse_unused_dipy_options(argv):
    """DIPY's parser offers --out_strat and --mix_names to every flow; ours
    name their outputs with --out_dir and the --out_* options alone, so a
    value that would change nothing is refused rather than ignored."""
    strategy = "absolute"
    for i, arg in enumerate(argv):
        if arg == "--out_strat" and i + 1 < len(argv):
            strategy = argv[i + 1]
        elif arg.startswith("--out_strat="):
            strategy = arg.split("=", 1)[1]
    if strategy != "absolute" or "--mix_names" in argv:
        raise ValueError(
            "dipy_ext commands write to --out_dir under the --out_* names; "
            "--out_strat and --mix_names are not supported"
        )


def run(prog=None):
    """Entry point of every dipy_ext console script."""
    from dipy.workflows.flow_runner import run_flow

    from dipy_ext.data.fetcher import FetcherError

    prog = prog or Path(sys.argv[0]).name
    if prog not in FLOWS:
        sys.exit(f"{prog}: unknown dipy_ext command; known: {', '.join(FLOWS)}")
    if "--version" in sys.argv[1:]:
        # DIPY's parser would print DIPY's version: ours comes first
        from dipy import __version__ as dipy_version

        from dipy_ext import __version__

        print(f"{prog} (dipy_ext {__version__}, DIPY {dipy_version})")
        return
    try:
        _log_through_root(sys.argv[1:])
        _refuse_unused_dipy_options(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"{prog}: error: {e}")
    import dipy.workflows.flow_runner as flow_runner

    flow_runner.configure_logger = _warnings_to_stderr(flow_runner.configure_logger)
    module, name = FLOWS[prog]
    flow = getattr(importlib.import_module(module), name)()
    try:
        run_flow(flow)
    except (ValueError, OSError, FetcherError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        sys.exit(f"{prog}: error: {message}")
    except KeyboardInterrupt:
        sys.exit(f"{prog}: interrupted")
