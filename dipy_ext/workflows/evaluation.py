"""dipy_evaluate_synthesis: compare synthetic volumes with real ones."""

import json

from dipy.utils.logging import logger
from dipy.workflows.workflow import Workflow
import numpy as np

from dipy_ext._checks import check_integer
from dipy_ext.workflows.base import check_outputs, output_folder, write_text_atomic


def _load_set(files, name):
    """Paths and ``(data, affine)`` of a set, each volume checked as the
    training commands check theirs (not constant, not tiny)."""
    from dipy_ext.data.io import load_volumes

    loaded = [(path, (data, affine)) for path, data, affine, _ in load_volumes(files)]
    if len(loaded) < 2:
        raise ValueError(f"the {name} set needs at least 2 volumes, got {len(loaded)}")
    return [p for p, _ in loaded], [item for _, item in loaded]


def _same_grid(items):
    shape, affine = items[0][0].shape, items[0][1]
    return all(v.shape == shape and np.allclose(a, affine, atol=1e-3) for v, a in items)


def _load_sets(real_files, synthetic_files, resample):
    """Both sets on the synthetic grid, in [0, 1], with their paths."""
    from dipy_ext.preprocessing import preprocess

    real_paths, real_items = _load_set(real_files, "real")
    syn_paths, syn_items = _load_set(synthetic_files, "synthetic")
    if not _same_grid(syn_items):
        raise ValueError("the synthetic volumes are not all on one grid")
    syn_shape, syn_affine = syn_items[0][0].shape, syn_items[0][1]
    if _same_grid(real_items + syn_items[:1]):
        real = np.stack([_to_unit(v) for v, _ in real_items])
    elif resample:
        vox = np.sqrt((syn_affine[:3, :3] ** 2).sum(axis=0))
        logger.info(f"Resampling the real volumes onto {syn_shape} x {vox} mm")
        real = np.stack(
            [
                preprocess(v, a, shape=syn_shape, voxel_size=vox)[0]
                for v, a in real_items
            ]
        )
    else:
        raise ValueError(
            f"real volumes are not on the synthetic grid {syn_shape}; pass "
            "--resample to bring them onto it"
        )
    synthetic = np.stack([_to_unit(v) for v, _ in syn_items])
    return real, synthetic, real_paths, syn_paths


def _to_unit(volume):
    """Scale a volume to [0, 1] as preprocessing does (99.5th brain percentile)."""
    from dipy_ext.preprocessing import intensity_range

    low, high = intensity_range(volume, volume != 0)
    return np.clip((volume - low) / (high - low), 0, 1).astype(np.float32)


def _reconstruction(vqvae_file, real, seed):
    from dipy_ext.metrics import reconstruction_report
    from dipy_ext.metrics.features import load_vqvae

    vq = load_vqvae(vqvae_file)
    if real.shape[1:] != vq.input_shape:
        raise ValueError(
            f"the real volumes {real.shape[1:]} are not on the grid of "
            f"'{vqvae_file}' {vq.input_shape}"
        )
    report = reconstruction_report(real, vq.predict(real), seed=seed)
    dice = report["tissue_dice"]
    spikes = ", ".join(f"{p}: {v:.2f}" for p, v in report["spectral_spike"].items())
    logger.info(
        f"Reconstructions by {vqvae_file}: PSNR {report['psnr_db']:.2f} dB, SSIM "
        f"{report['ssim']:.4f}, tissue Dice GM {dice['gm']:.3f} / WM "
        f"{dice['wm']:.3f}, spectral spikes ({spikes}; 1.0 = no grid), spectrum "
        f"distance {report['spectrum_distance']:.3f}, sharpness ratio "
        f"{report['sharpness_ratio']:.3f}, classifier accuracy vs "
        f"real {report['classifier_two_sample_test']['accuracy']:.2f}"
    )
    return report


def _json_safe(value):
    """The report with NaN and infinities as null (bare NaN is not JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class EvaluateSynthesisFlow(Workflow):
    @classmethod
    def get_short_name(cls):
        return "evaluate_synthesis"

    def run(
        self,
        real_files,
        synthetic_files,
        features="stats",
        resample=False,
        max_pairs=100,
        no_tissue=False,
        vqvae_file="",
        seed=0,
        out_dir="",
        out_report="evaluation.json",
        out_figure="evaluation.png",
    ):
        """Evaluate synthetic volumes against real ones.

        Both sets are scaled to [0, 1] (99.5th percentile of the brain) and
        must share one grid; with ``--resample`` the real volumes are brought
        onto the synthetic volumes' grid (same shape and voxel size, centred
        on each brain). The JSON report holds diversity (pairwise MS-SSIM in
        each set), Fréchet distance, MMD, precision / recall / density /
        coverage and a classifier two-sample test in a feature space,
        tissue-fraction distributions (HMRF) and nearest-neighbour
        (memorisation) distances, and the sharpness ratio (mean gradient
        magnitude inside the brain, synthetic over real); the PNG shows
        slices, intensity histograms, tissue fractions and distances.

        Parameters
        ----------
        real_files : string
            Real volumes (glob, folder or file): the training set, for the
            memorisation check.
        synthetic_files : string
            Synthetic volumes (glob, folder or file).
        features : string, optional
            'stats' (built-in features), a dipy_ext model file (pooled VQ-VAE
            encoder features) or a Keras model file (.keras) mapping a batch
            of volumes to feature vectors.
        resample : bool, optional
            Resample the real volumes onto the synthetic grid if they differ
            (otherwise different grids are an error).
        max_pairs : int, optional
            Pairs per set for the diversity (drawn with the seed).
        no_tissue : bool, optional
            Skip the HMRF tissue fractions.
        vqvae_file : string, optional
            A VQVAE3D or LatentDiffusion3D model file: also reconstruct the
            real volumes through its autoencoder and report PSNR, SSIM,
            tissue Dice, spectral spikes (grids), spectrum distance,
            sharpness ratio and the classifier test of reconstructions vs
            real ("reconstruction" in the report), the ceiling of the
            realism its samples can reach.
        seed : int, optional
            Random seed (pair sampling, classifier folds).
        out_dir : string, optional
            Output folder.
        out_report : string, optional
            JSON report.
        out_figure : string, optional
            PNG figure.
        """
        from dipy_ext.metrics import evaluate_synthesis
        from dipy_ext.viz import evaluation_figure

        check_integer("--max_pairs", max_pairs, 1)
        check_integer("--seed", seed, 0)
        with output_folder(out_dir) as folder:
            report_path, figure_path = folder / out_report, folder / out_figure
            check_outputs([report_path, figure_path], self._force_overwrite)
            real, synthetic, real_paths, syn_paths = _load_sets(
                real_files, synthetic_files, resample
            )
            logger.info(
                f"Evaluating {len(synthetic)} synthetic against {len(real)} real "
                "volumes"
            )
            report = evaluate_synthesis(
                real,
                synthetic,
                features=features,
                max_pairs=max_pairs,
                seed=seed,
                tissue=not no_tissue,
            )
            if vqvae_file:
                report["reconstruction"] = _reconstruction(vqvae_file, real, seed)
            report["real_files"] = [str(p) for p in real_paths]
            report["synthetic_files"] = [str(p) for p in syn_paths]
            evaluation_figure(real, synthetic, report, figure_path)
            write_text_atomic(report_path, json.dumps(_json_safe(report), indent=2))
        _log_summary(report)
        logger.info(f"Saved {report_path} and {figure_path}")
        return [str(report_path), str(figure_path)]


def _log_summary(report):
    div = report["diversity"]
    c2st = report["classifier_two_sample_test"]
    logger.info(
        f"Diversity (MS-SSIM) real {div['real']:.3f}, "
        f"synthetic {div['synthetic']:.3f}; Frechet distance "
        f"{report['frechet_distance']:.4g} ({report['features']}); classifier "
        f"accuracy {c2st['accuracy']:.2f}; sharpness ratio "
        f"{report['sharpness_ratio']:.3f}; near copies "
        f"{report['memorization']['flagged_fraction']:.0%}"
    )
