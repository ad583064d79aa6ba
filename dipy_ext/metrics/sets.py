"""Comparisons of a real and a synthetic set of volumes.

* diversity: mean pairwise MS-SSIM inside a set (near 1 = mode collapse);
* Fréchet distance, MMD and precision / recall / density / coverage between
  feature vectors (any feature extractor, see :mod:`dipy_ext.metrics.features`);
* memorisation: distance from each synthetic volume to its nearest training
  volume, against the training set's own nearest-neighbour distances;
* a classifier two-sample test: held-out accuracy of a classifier telling
  real from synthetic (0.5 = indistinguishable), with a confidence interval.
"""

import numpy as np
from scipy import linalg, stats

from dipy_ext.metrics.image import ms_ssim


def _features(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} should be an (N, F) array with N >= 2, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def _pairs(n, max_pairs, rng):
    """Distinct unordered index pairs, all of them or a random subset."""
    i, j = np.triu_indices(n, k=1)
    if max_pairs is not None and len(i) > max_pairs:
        keep = rng.choice(len(i), size=max_pairs, replace=False)
        i, j = i[keep], j[keep]
    return i, j


def diversity(volumes, *, max_pairs=100, seed=0, mask=None, data_range=1.0):
    """Mean pairwise MS-SSIM over distinct pairs of a set of volumes.

    Lower is more diverse. Compare a synthetic set's value with a real set's
    of the same size: close to it is good, near 1 means mode collapse.

    Returns
    -------
    mean, std : float
        Over the (at most ``max_pairs``, drawn with ``seed``) pairs.
    """
    volumes = np.asarray(volumes)
    if volumes.ndim != 4 or len(volumes) < 2:
        raise ValueError(
            f"diversity needs at least 2 volumes (N, X, Y, Z), got {volumes.shape}"
        )
    i, j = _pairs(len(volumes), max_pairs, np.random.default_rng(seed))
    values = [
        ms_ssim(volumes[a], volumes[b], mask=mask, data_range=data_range)
        for a, b in zip(i, j)
    ]
    return float(np.mean(values)), float(np.std(values))


def frechet_distance(real, fake):
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``, as in FID.
    """
    real = _features(real, "real features")
    fake = _features(fake, "synthetic features")
    mu_r, mu_f = real.mean(0), fake.mean(0)
    s_r = np.atleast_2d(np.cov(real, rowvar=False))
    s_f = np.atleast_2d(np.cov(fake, rowvar=False))
    # Tr((S_r S_f)^(1/2)) from the symmetric form S_r^(1/2) S_f S_r^(1/2):
    # exact for rank-deficient covariances (fewer volumes than features),
    # where a general matrix square root is unstable.
    w, v = linalg.eigh(s_r)
    root_r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = linalg.eigvalsh(root_r @ s_f @ root_r)
    trace_covmean = np.sum(np.sqrt(np.clip(inner, 0, None)))
    value = np.sum((mu_r - mu_f) ** 2) + np.trace(s_r + s_f) - 2 * trace_covmean
    return float(max(value, 0.0))


def _sq_dists(a, b):
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0.0)


def mmd(real, fake, *, kernel="rbf", bandwidth=None):
    r"""Unbiased squared maximum mean discrepancy between two feature sets.

    Parameters
    ----------
    real, fake : ndarray (N, F), (M, F)
        Feature vectors.
    kernel : {"rbf", "polynomial"}, optional
        Gaussian kernel (bandwidth: median distance of the pooled set by
        default), or the cubic polynomial kernel of KID,
        :math:`(x \cdot y / F + 1)^3` for F features.
    bandwidth : float, optional
        RBF bandwidth.

    Returns
    -------
    mmd2 : float
        May be slightly negative for identical distributions (unbiased).
    bandwidth : float
        The RBF bandwidth used (None for the polynomial kernel).
    """
    x = _features(real, "real features")
    y = _features(fake, "synthetic features")
    if kernel == "rbf":
        if bandwidth is None:
            pooled = np.concatenate([x, y])
            d = np.sqrt(_sq_dists(pooled, pooled))
            bandwidth = float(np.median(d[np.triu_indices(len(pooled), 1)])) or 1.0

        def k(a, b):
            return np.exp(-_sq_dists(a, b) / (2 * bandwidth**2))
    elif kernel == "polynomial":
        dim = x.shape[1]

        def k(a, b):
            return (a @ b.T / dim + 1) ** 3
    else:
        raise ValueError(f"kernel should be 'rbf' or 'polynomial', got {kernel!r}")
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    value = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )
    return float(value), bandwidth


def prdc(real, fake, *, k=5):
    """Precision, recall, density and coverage (Naeem et al. 2020).

    k-NN balls around real (and synthetic) feature vectors approximate the
    two manifolds: precision is the fraction of synthetic samples inside the
    real manifold, recall the fraction of real samples inside the synthetic
    one, density counts how many real balls hold each synthetic sample
    (divided by k), coverage the fraction of real balls holding at least one
    synthetic sample.
    """
    real = _features(real, "real features")
    fake = _features(fake, "synthetic features")
    k = int(min(k, len(real) - 1, len(fake) - 1))
    if k < 1:
        raise ValueError("prdc needs at least 2 real and 2 synthetic samples")
    d_rr = np.sqrt(_sq_dists(real, real))
    d_ff = np.sqrt(_sq_dists(fake, fake))
    d_rf = np.sqrt(_sq_dists(real, fake))
    r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf <= r_real[:, None]  # (real ball, fake sample)
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d_rf <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) <= r_real).mean()),
        "k": k,
    }


def volume_distances(a, b=None, *, mask=None):
    """Root-mean-square voxel differences between every volume of a and b.

    With ``b`` None, distances within ``a`` (diagonal set to inf).
    """
    a = np.asarray(a, dtype=np.float32).reshape(len(a), -1)
    if mask is not None:
        a = a[:, np.ravel(mask) > 0]
    same = b is None
    b = a if same else np.asarray(b, dtype=np.float32).reshape(len(b), -1)
    if not same and mask is not None:
        b = b[:, np.ravel(mask) > 0]
    d = np.sqrt(_sq_dists(a.astype(np.float64), b.astype(np.float64)) / a.shape[1])
    if same:
        np.fill_diagonal(d, np.inf)
    return d


def memorization(synthetic, training, *, mask=None, factor=1.0):
    """Are synthetic volumes near-copies of training volumes?

    Each synthetic volume's distance to its nearest training volume (RMS
    voxel difference) is compared with the training set's own
    nearest-neighbour distances: a synthetic volume closer to a training
    volume than ``factor`` times the closest pair of training volumes is
    flagged as a near-copy.

    Returns
    -------
    report : dict
        ``synthetic_nn`` (per synthetic volume), ``training_nn`` (per training
        volume), their medians and minima, ``threshold``, ``flagged_fraction``
        and ``nearest_index`` (the nearest training volume of each sample).
    """
    synthetic = np.asarray(synthetic)
    training = np.asarray(training)
    if len(training) < 2:
        raise ValueError("memorization needs at least 2 training volumes")
    d_st = volume_distances(synthetic, training, mask=mask)
    d_tt = volume_distances(training, mask=mask)
    syn_nn = d_st.min(axis=1)
    train_nn = d_tt.min(axis=1)
    threshold = factor * float(train_nn.min())
    return {
        "synthetic_nn": syn_nn.tolist(),
        "training_nn": train_nn.tolist(),
        "nearest_index": d_st.argmin(axis=1).tolist(),
        "synthetic_nn_median": float(np.median(syn_nn)),
        "synthetic_nn_min": float(syn_nn.min()),
        "training_nn_median": float(np.median(train_nn)),
        "training_nn_min": float(train_nn.min()),
        "threshold": threshold,
        "flagged_fraction": float((syn_nn < threshold).mean()),
    }


def _with_squares(x):
    return np.hstack([x, x**2])


def classifier_two_sample_test(real, fake, *, folds=5, seed=0, confidence=0.95):
    """Held-out accuracy of a classifier telling real from synthetic.

    The classifier is a logistic regression on the standardised features and
    their squares, so it sees differences of spread as well as of mean.
    Standardisation is fitted inside each training fold (a scikit-learn
    pipeline); the accuracy pools every held-out prediction of a stratified
    k-fold split, and its Wilson interval and a binomial test against 0.5
    come from those counts. 0.5 means indistinguishable, 1.0 trivially
    separable.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    real = _features(real, "real features")
    fake = _features(fake, "synthetic features")
    x = np.concatenate([real, fake])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    folds = int(min(folds, len(real), len(fake)))
    if folds < 2:
        raise ValueError("the classifier test needs at least 2 volumes per set")
    clf = make_pipeline(
        StandardScaler(),
        FunctionTransformer(_with_squares),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=5000),
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(clf, x, y, cv=cv)
    correct = int((predicted == y).sum())
    n = len(y)
    test = stats.binomtest(correct, n, 0.5)
    ci = test.proportion_ci(confidence, method="wilson")
    return {
        "accuracy": correct / n,
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "p_value": float(test.pvalue),
        "folds": folds,
        "n": n,
    }
