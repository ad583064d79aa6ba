"""Metrics that see anatomy and artefacts, validated on a calibration ladder.

Each must order known degradations of real-like volumes as a radiologist
would: blur by 0.5 < 1.0 < 1.5 voxel, and a checkerboard seen as an
artefact, not as detail (the mistake of gradient energy alone).
"""

import numpy as np
import pytest
from scipy import ndimage

from dipy_ext.data import phantom_cohort
from dipy_ext.metrics import get_feature_extractor, sharpness_ratio
from dipy_ext.metrics.outside import (
    outside_components,
    volumes_with_outside_components,
)
from dipy_ext.metrics.spectrum import (
    mean_tissue_dice,
    radial_power_spectrum,
    spectral_spike,
    spectral_spikes,
    spectrum_distance,
    tissue_dice,
)


@pytest.fixture(scope="module")
def ladder():
    real = phantom_cohort(6, (48, 48, 48), rng=3, noise=0.0)
    blurred = {
        s: np.stack([ndimage.gaussian_filter(v, s) for v in real])
        for s in (0.5, 1.0, 1.5)
    }
    board = 0.05 * (2.0 * (np.indices(real.shape[1:]).sum(axis=0) % 2) - 1)
    checker = np.stack([np.where(v > 0, v + board, 0) for v in real])
    return real, blurred, checker


def test_spike_sees_a_grid_and_not_blur(ladder):
    real, blurred, checker = ladder
    base = spectral_spike(real, 2)
    assert spectral_spike(checker, 2) > 3 * base
    for volumes in blurred.values():
        assert spectral_spike(volumes, 2) < 1.15 * base
    # a grid of another period shows at that period only
    grid4 = real + 0.05 * np.cos(np.pi / 2 * np.arange(48))[None, :, None, None]
    spikes = spectral_spikes(grid4, (2, 4, 8))
    assert spikes[4] > 3 * spectral_spike(real, 4)
    assert spikes[2] < 1.15 * base


def test_sharpness_alone_is_fooled_by_a_grid(ladder):
    """Why the spectral measures exist: gradient energy counts a grid (here
    of period 4, which central differences see) as sharpness, and cannot
    see a 2-voxel checkerboard at all."""
    real, _, checker = ladder
    grid4 = np.cos(np.pi / 2 * np.arange(48))[None, :, None, None]
    gridded = np.where(real > 0, real + 0.05 * grid4, 0)
    assert sharpness_ratio(real, gridded, paired=True) > 1.05
    assert spectral_spike(gridded, 4) > 2 * spectral_spike(real, 4)
    assert abs(sharpness_ratio(real, checker, paired=True) - 1) < 0.01


def test_spectrum_distance_orders_the_ladder(ladder):
    real, blurred, checker = ladder
    d = [spectrum_distance(real, blurred[s]) for s in (0.5, 1.0, 1.5)]
    assert d[0] < d[1] < d[2]
    other = phantom_cohort(6, (48, 48, 48), rng=4, noise=0.0)
    floor = spectrum_distance(real, other)  # two real sets
    assert floor < d[0] and floor < spectrum_distance(real, checker)
    f, p = radial_power_spectrum(real)
    assert f.max() > 0.8  # the corner, where a 3-D checkerboard lies


def test_tissue_dice_orders_the_ladder(ladder):
    real, blurred, _ = ladder
    assert tissue_dice(real[0], real[0]) == {"csf": 1.0, "gm": 1.0, "wm": 1.0}
    dice = [mean_tissue_dice(real, blurred[s]) for s in (0.5, 1.0, 1.5)]
    for tissue in ("gm", "wm"):
        assert dice[0][tissue] > dice[1][tissue] > dice[2][tissue]


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="period should be >= 2 and divide"):
        spectral_spike(np.zeros((32, 32, 30)), 4)
    with pytest.raises(ValueError, match="each axis >= 8"):
        spectral_spike(np.zeros((4, 8, 8)), 2)
    with pytest.raises(ValueError, match="two 3-D volumes of one shape"):
        tissue_dice(np.zeros((16, 16, 16)), np.zeros((16, 16, 8)))
    with pytest.raises(ValueError, match="volumes of one shape"):
        spectrum_distance(np.zeros((1, 32, 32, 32)), np.zeros((1, 16, 16, 16)))


def test_outside_components_finds_a_speck(ladder):
    real = ladder[0]
    assert [outside_components(v) for v in real] == [[]] * len(real)
    specked = real.copy()
    specked[0, 1:3, 1:3, 1:3] = 0.8  # 8 voxels in a corner, off the brain
    specked[2, -2, -2, -2] = 0.3
    assert outside_components(specked[0]) == [8]
    assert outside_components(specked[0], min_voxels=9) == []
    assert volumes_with_outside_components(specked) == 2
    assert outside_components(np.zeros((8, 8, 8))) == []


def test_spectrum_features_order_the_ladder(ladder):
    real, blurred, checker = ladder
    spectra = get_feature_extractor("spectrum")
    high = [spectra(v)[:, -8:].mean() for v in (real, *blurred.values())]
    assert np.all(np.diff(high) < 0), high  # blur removes the high shells
    assert spectra(checker)[:, -8:].mean() > high[0]  # a grid adds to them
    assert spectra(real).shape == (len(real), 24)
