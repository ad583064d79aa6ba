"""Quantizers: the seam between VQVAE3D's encoder and decoder.

:class:`VQVAE3D <dipy_ext.nn.vqvae.VQVAE3D>` knows a quantizer only through
the :class:`Quantizer` interface below; everything done with codes (the
quantization inside the network, nearest codes and code lookup in numpy,
random codes, usage counting) belongs to the quantizer. Three are provided:

* ``"vq"``, :class:`VectorQuantizer`: a codebook moved by exponential moving
  averages, with dead-code restart (van den Oord et al. 2017);
  ``log2(num_embeddings)`` bits per latent position.
* ``"fsq"``, :class:`FiniteScalarQuantizer`: each latent channel bounded
  and rounded to a few levels (Mentzer et al. 2023); ``levels=(8, 8, 8, 5,
  5, 5)`` gives 64,000 codes (16 bits) in 6 channels, with no codebook to
  collapse and no auxiliary loss.
* ``"rvq"``, :class:`ResidualVectorQuantizer`: several EMA codebooks, each
  quantizing what the previous ones left (``stages * log2(num_embeddings)``
  bits) in the same latent width.

Adding a quantizer: subclass :class:`Quantizer`, implement its abstract
methods, and decorate the class with ``@register_quantizer("name")``; then
``VQVAE3D(quantizer={"kind": "name", ...})`` builds it and model files name
it.

Quantizers run in float32 (distances, rounding); they are built with
``dtype="float32"`` even under a mixed-precision policy.
"""

import numpy as np

from dipy_ext._checks import check_integer
from dipy_ext.nn._backend import keras, layers, ops

QUANTIZERS = {}
# FSQ alphabets larger than this count usage per channel and level
MAX_COUNTED_CODES = 2**20


def register_quantizer(kind):
    """Class decorator: make a :class:`Quantizer` buildable by ``kind``."""

    def register(cls):
        cls.kind = kind
        QUANTIZERS[kind] = cls
        return cls

    return register


def make_quantizer(spec, *, seed=None, name="quantizer"):
    """A quantizer from its spec, ``{"kind": ..., **options}``.

    Raises a one-line ``ValueError`` for an unknown kind or bad options.
    """
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in QUANTIZERS:
        raise ValueError(
            f"quantizer kind should be one of {sorted(QUANTIZERS)}, got {kind!r}"
        )
    try:
        return QUANTIZERS[kind](**spec, seed=seed, name=name)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad options for the {kind!r} quantizer: {e}") from e


def _sum_across_replicas(x):
    """Sum a statistic over data-parallel replicas (tf.distribute), if any.

    Every replica then applies the same EMA update, so the codebook stays
    identical across replicas.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def _gather_across_replicas(x):
    """Concatenate a batch's rows from every data-parallel replica, in replica
    order (tf.distribute), so that a random choice among them, made with the
    same seed on every replica, is one choice shared by all."""
    if keras.backend.backend() != "tensorflow":
        return x  # keras.distribution (JAX) arrays are already global
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_gather(x, axis=0)


def usage_and_perplexity(counts):
    """Fraction of codes used, and perplexity, from per-code counts (numpy).

    Perplexity is ``exp(entropy)`` of the code distribution: the effective
    number of codes in use (it grows with the number of vectors counted).
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts / total
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return float((counts > 0).mean()), float(np.exp(entropy))


class Quantizer(layers.Layer):
    """The interface of a quantizer (subclass it; see the module docstring).

    Attributes a subclass sets: ``embedding_dim`` (latent channels),
    ``num_codes`` (size of one index's alphabet) and ``index_channels``
    (indices per latent position: 1, or one per residual stage).

    In the network, ``call(z, training)`` returns the quantized latents
    (straight-through gradient to ``z``) and the code indices, adds any
    auxiliary loss with ``add_loss`` and, while training, counts code use
    with :meth:`count_usage`. In numpy, :meth:`codes` finds the codes of
    latent vectors, :meth:`code_vectors` looks them up, and
    :meth:`random_codes` draws codes and :meth:`snap` moves latents onto
    their nearest codes (Keras layers already have a ``quantize`` method).
    """

    kind = None

    def __init__(self, *, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed

    def usage_size(self):
        """Length of the use counter: one count per code (per index channel)."""
        return self.num_codes * self.index_channels

    def build_usage(self):
        """The per-code use counter read by :class:`CodebookUsage`."""
        self.usage_count = self.add_weight(
            shape=(self.usage_size(),),
            initializer="zeros",
            name="usage_count",
            trainable=False,
            aggregation="mean",
        )

    def usage_ids(self, indices, xp):
        """The counter slot of each index, flat (``xp``: ``ops`` or numpy):
        each index channel has its own ``num_codes`` slots."""
        flat = xp.reshape(indices, (-1, self.index_channels))
        offsets = xp.arange(self.index_channels) * self.num_codes
        return xp.reshape(flat + offsets[None, :], (-1,))

    def count_usage(self, indices):
        """Add the use of ``indices`` (any shape, last axis the index channels
        when there are several) to :attr:`usage_count`."""
        ids = ops.cast(self.usage_ids(ops.cast(indices, "int32"), ops), "int32")
        ones = ops.ones(ops.shape(ids), "float32")
        counts = ops.segment_sum(ones, ids, num_segments=self.usage_size())
        self.usage_count.assign_add(_sum_across_replicas(counts))

    def code_counts(self, indices):
        """Per-code counts (numpy) of an index array, as :attr:`usage_count`."""
        ids = self.usage_ids(np.asarray(indices, np.int64), np)
        return np.bincount(ids, minlength=self.usage_size())

    def index_shape(self, spatial_shape):
        """Shape of the indices of latents with this spatial shape."""
        extra = () if self.index_channels == 1 else (self.index_channels,)
        return (*spatial_shape, *extra)

    # numpy side -------------------------------------------------------------
    def codes(self, latents):
        """Indices of the codes nearest to latent vectors (..., D), numpy."""
        raise NotImplementedError

    def code_vectors(self, indices):
        """Latent vectors (..., D) of code indices, numpy float32."""
        raise NotImplementedError

    def snap(self, latents):
        """Latent vectors snapped to their nearest codes, numpy float32."""
        return self.code_vectors(self.codes(latents))

    def random_codes(self, shape, rng):
        """Code indices drawn uniformly for ``shape`` latent positions."""
        return rng.integers(self.num_codes, size=self.index_shape(shape))

    def spec(self):
        """``{"kind": ..., **options}``: what rebuilds this quantizer."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape, tuple(input_shape[:-1]) + self.index_shape(())


def _straight_through(z, quantized):
    return z + ops.stop_gradient(quantized - z)


class _EMACodebook:
    """One EMA codebook with dead-code restart, owned by a Keras layer.

    Each training call moves every code towards the mean of the vectors
    assigned to it (moving averages of counts and sums) and replaces codes
    whose average count has fallen below a threshold by vectors of the
    current batch (dead-code restart). Starting the counts at zero makes the
    first batch a data-driven initialisation.
    """

    def __init__(
        self, layer, k, d, *, decay, threshold, epsilon, seed_generator, prefix=""
    ):
        stat = {"trainable": False, "aggregation": "mean"}
        self.k, self.d = k, d
        self.decay, self.threshold, self.epsilon = decay, threshold, epsilon
        self.seed_generator = seed_generator  # tracked by the layer (JAX state)
        self.embeddings = layer.add_weight(
            shape=(k, d),
            initializer="random_normal",
            name=f"{prefix}embeddings",
            **stat,
        )
        self.ema_count = layer.add_weight(
            shape=(k,), initializer="zeros", name=f"{prefix}ema_count", **stat
        )
        self.ema_sum = layer.add_weight(
            shape=(k, d), initializer="zeros", name=f"{prefix}ema_sum", **stat
        )

    def nearest(self, flat):
        e = ops.convert_to_tensor(self.embeddings)
        dist = (
            ops.sum(flat**2, axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(e))
            + ops.sum(e**2, axis=1)[None, :]
        )
        return ops.argmin(dist, axis=1)

    def lookup(self, indices):
        return ops.take(self.embeddings, indices, axis=0)

    def update(self, flat, indices):
        onehot = ops.one_hot(indices, self.k, dtype="float32")
        count = _sum_across_replicas(ops.sum(onehot, axis=0))
        total = _sum_across_replicas(ops.matmul(ops.transpose(onehot), flat))
        ema_count = self.decay * self.ema_count + (1 - self.decay) * count
        ema_sum = self.decay * self.ema_sum + (1 - self.decay) * total
        n = ops.sum(ema_count)
        smoothed = (ema_count + self.epsilon) / (n + self.k * self.epsilon) * n
        embeddings = ema_sum / smoothed[:, None]
        # Dead-code restart: codes rarely chosen jump onto encoder vectors of
        # the batch. Every replica draws from the whole global batch with the
        # same seed, so all make the same choice: a restarted code is one
        # encoder output, never an average of several replicas' picks.
        dead = ema_count < self.threshold
        candidates = _gather_across_replicas(flat)
        pick = keras.random.randint(
            (self.k,), 0, ops.shape(candidates)[0], seed=self.seed_generator
        )
        sampled = ops.take(candidates, pick, axis=0)
        dead_col = dead[:, None]
        self.embeddings.assign(ops.where(dead_col, sampled, embeddings))
        self.ema_sum.assign(ops.where(dead_col, sampled * self.threshold, ema_sum))
        self.ema_count.assign(ops.where(dead, self.threshold, ema_count))

    def nearest_numpy(self, flat):
        codebook = np.asarray(ops.convert_to_numpy(self.embeddings), np.float32)
        idx = np.empty(len(flat), dtype=np.int64)
        sq = (codebook**2).sum(axis=1)
        for start in range(0, len(flat), 65536):  # bound the distance matrix
            chunk = flat[start : start + 65536]
            dist = sq[None, :] - 2.0 * chunk @ codebook.T
            idx[start : start + 65536] = dist.argmin(axis=1)
        return idx

    def numpy(self):
        return np.asarray(ops.convert_to_numpy(self.embeddings), np.float32)


class _EMAQuantizer(Quantizer):
    """What the EMA-codebook quantizers share: their options (checked) and
    their spec."""

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        *,
        commitment_cost=0.25,
        decay=0.99,
        dead_code_threshold=1.0,
        epsilon=1e-5,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.num_embeddings = self.num_codes = check_integer(
            "num_embeddings", num_embeddings, 2
        )
        self.embedding_dim = check_integer("embedding_dim", embedding_dim, 1)
        self.commitment_cost = float(commitment_cost)
        self.decay = float(decay)
        self.dead_code_threshold = float(dead_code_threshold)
        self.epsilon = float(epsilon)

    def _codebook(self, seed_generator, **kwargs):
        """One EMA codebook with this quantizer's options."""
        return _EMACodebook(
            self,
            self.num_embeddings,
            self.embedding_dim,
            decay=self.decay,
            threshold=self.dead_code_threshold,
            epsilon=self.epsilon,
            seed_generator=seed_generator,
            **kwargs,
        )

    def spec(self):
        return {
            "kind": self.kind,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "commitment_cost": self.commitment_cost,
            "decay": self.decay,
            "dead_code_threshold": self.dead_code_threshold,
        }


@register_quantizer("vq")
class VectorQuantizer(_EMAQuantizer):
    """Nearest-code quantization with an EMA codebook and dead-code restart.

    Parameters
    ----------
    num_embeddings : int
        Codebook size.
    embedding_dim : int
        Length of each code (the encoder's output channels).
    commitment_cost : float, optional
        Weight of the loss pulling encoder outputs towards their codes.
    decay : float, optional
        EMA decay of the codebook statistics.
    dead_code_threshold : float, optional
        A code whose EMA count per batch is below this is restarted.
    epsilon : float, optional
        Laplace smoothing of the counts.
    seed : int, optional
        Seed of the restart sampling.
    """

    def __init__(self, num_embeddings, embedding_dim, *, seed=None, **kwargs):
        super().__init__(num_embeddings, embedding_dim, seed=seed, **kwargs)
        self.index_channels = 1
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.codebook_ = self._codebook(self.seed_generator)
        self.build_usage()  # after the codebook: the weight order of model files

    @property
    def embeddings(self):
        return self.codebook_.embeddings

    @property
    def ema_count(self):
        return self.codebook_.ema_count

    @property
    def ema_sum(self):
        return self.codebook_.ema_sum

    @property
    def codebook(self):
        """The codebook, ``(num_embeddings, embedding_dim)`` numpy array."""
        return self.codebook_.numpy()

    def call(self, z, training=False):
        z = ops.cast(z, "float32")
        flat = ops.reshape(z, (-1, self.embedding_dim))
        indices = self.codebook_.nearest(flat)
        quantized = ops.reshape(self.codebook_.lookup(indices), ops.shape(z))
        if training:
            self.count_usage(indices)
            self.codebook_.update(flat, indices)
        commitment = ops.mean((ops.stop_gradient(quantized) - z) ** 2)
        self.add_loss(self.commitment_cost * commitment)
        return _straight_through(z, quantized), ops.reshape(indices, ops.shape(z)[:-1])

    def codes(self, latents):
        latents = np.asarray(latents, dtype=np.float32)
        flat = latents.reshape(-1, self.embedding_dim)
        return self.codebook_.nearest_numpy(flat).reshape(latents.shape[:-1])

    def code_vectors(self, indices):
        return self.codebook[np.asarray(indices)]


@register_quantizer("rvq")
class ResidualVectorQuantizer(_EMAQuantizer):
    """Residual VQ: ``stages`` EMA codebooks, each quantizing the residual.

    The latent is the sum of one code from each stage, so the rate is
    ``stages * log2(num_embeddings)`` bits per position in an
    ``embedding_dim``-channel latent. Parameters as
    :class:`VectorQuantizer`, plus ``stages``.
    """

    def __init__(self, num_embeddings, embedding_dim, *, stages=2, seed=None, **kwargs):
        super().__init__(num_embeddings, embedding_dim, seed=seed, **kwargs)
        check_integer("stages", stages, 1)
        self.stages = self.index_channels = int(stages)
        self.seed_generators = [
            keras.random.SeedGenerator(None if seed is None else seed + s)
            for s in range(self.stages)
        ]

    def build(self, input_shape):
        self.codebooks = [
            self._codebook(generator, prefix=f"stage{s}_")
            for s, generator in enumerate(self.seed_generators)
        ]
        self.build_usage()

    @property
    def codebook(self):
        """The codebooks, ``(stages, num_embeddings, embedding_dim)``."""
        return np.stack([c.numpy() for c in self.codebooks])

    def call(self, z, training=False):
        z = ops.cast(z, "float32")
        flat = ops.reshape(z, (-1, self.embedding_dim))
        residual, quantized, all_indices = flat, ops.zeros_like(flat), []
        for codebook in self.codebooks:
            indices = codebook.nearest(residual)
            code = codebook.lookup(indices)
            if training:
                codebook.update(residual, indices)
            quantized = quantized + code
            residual = residual - code
            all_indices.append(indices)
        indices = ops.stack(all_indices, axis=-1)
        if training:
            self.count_usage(indices)
        quantized = ops.reshape(quantized, ops.shape(z))
        commitment = ops.mean((ops.stop_gradient(quantized) - z) ** 2)
        self.add_loss(self.commitment_cost * commitment)
        index_shape = (*ops.shape(z)[:-1], self.stages)
        return _straight_through(z, quantized), ops.reshape(indices, index_shape)

    def codes(self, latents):
        latents = np.asarray(latents, dtype=np.float32)
        residual = latents.reshape(-1, self.embedding_dim)
        out = []
        for codebook in self.codebooks:
            idx = codebook.nearest_numpy(residual)
            residual = residual - codebook.numpy()[idx]
            out.append(idx)
        return np.stack(out, axis=-1).reshape(*latents.shape[:-1], self.stages)

    def code_vectors(self, indices):
        indices = np.asarray(indices)
        books = self.codebook
        return sum(books[s][indices[..., s]] for s in range(self.stages)).astype(
            np.float32
        )

    def spec(self):
        return {**super().spec(), "stages": self.stages}


@register_quantizer("fsq")
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization (Mentzer et al. 2023).

    Each of the ``len(levels)`` latent channels is bounded (a shifted tanh)
    and rounded to ``levels[c]`` equally spaced values in [-1, 1]; the code
    of a position is the tuple of its rounded channels, one of
    ``prod(levels)``. Nothing is learned, so no code can die: every code is
    reachable, and there is no commitment loss.

    Parameters
    ----------
    levels : sequence of int
        Levels per channel (each >= 2); ``(8, 8, 8, 5, 5, 5)`` is 16 bits.
    """

    def __init__(self, levels=(8, 8, 8, 5, 5, 5), *, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        levels = tuple(int(v) for v in levels)
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels should be ints >= 2, got {levels}")
        self.levels = levels
        self.embedding_dim = len(levels)
        self.num_codes = int(np.prod(levels))
        if self.num_codes >= 2**31:
            raise ValueError(
                f"FSQ levels {levels} make {self.num_codes} codes; at most 2^31 - 1 "
                "(code indices are int32)"
            )
        self.index_channels = 1
        lv = np.asarray(levels, np.float64)
        eps = 1e-3
        self._half_l = (lv - 1) * (1 + eps) / 2
        self._offset = np.where(lv % 2 == 0, 0.5, 0.0)
        self._shift = np.arctanh(self._offset / self._half_l)
        self._half_width = np.floor(lv / 2)
        self._basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int64)

    def build(self, input_shape):
        self.build_usage()

    def usage_size(self):
        """Per code, or past :data:`MAX_COUNTED_CODES` codes per channel and
        level (a counter of billions of codes would not fit in memory)."""
        if self.num_codes <= MAX_COUNTED_CODES:
            return self.num_codes
        return len(self.levels) * max(self.levels)

    def usage_ids(self, indices, xp):
        """The codes, or past :data:`MAX_COUNTED_CODES` each channel's level."""
        if self.num_codes <= MAX_COUNTED_CODES:
            return xp.reshape(indices, (-1,))
        basis = self._basis.astype(np.int32)
        digits = (indices[..., None] // basis) % np.asarray(self.levels, np.int32)
        offsets = np.arange(len(self.levels), dtype=np.int32) * max(self.levels)
        return xp.reshape(digits + offsets, (-1,))

    def call(self, z, training=False):
        z = ops.cast(z, "float32")
        half_l, offset, shift, half_width = (
            ops.convert_to_tensor(a.astype(np.float32))
            for a in (self._half_l, self._offset, self._shift, self._half_width)
        )
        bounded = ops.tanh(z + shift) * half_l - offset
        rounded = _straight_through(bounded, ops.round(bounded))
        quantized = rounded / half_width
        digits = ops.cast(ops.stop_gradient(rounded) + half_width, "int32")
        indices = ops.sum(
            digits * ops.convert_to_tensor(self._basis.astype(np.int32)), axis=-1
        )
        if training:
            self.count_usage(indices)
        return quantized, indices

    def _digits(self, latents):
        latents = np.asarray(latents, np.float64)
        digits = np.rint(latents * self._half_width) + self._half_width
        return np.clip(digits, 0, np.asarray(self.levels) - 1).astype(np.int64)

    def codes(self, latents):
        return (self._digits(latents) * self._basis).sum(axis=-1)

    def code_vectors(self, indices):
        indices = np.asarray(indices, np.int64)[..., None]
        digits = (indices // self._basis) % np.asarray(self.levels)
        return ((digits - self._half_width) / self._half_width).astype(np.float32)

    @property
    def codebook(self):
        """Every code vector, ``(prod(levels), len(levels))``."""
        return self.code_vectors(np.arange(self.num_codes))

    def spec(self):
        return {"kind": self.kind, "levels": list(self.levels)}


class CodebookUsage(keras.callbacks.Callback):
    """Log codebook usage and perplexity over each training epoch.

    Adds ``codebook_usage`` (fraction of codes chosen at least once in the
    epoch) and ``perplexity`` to the epoch logs, so they appear in the
    progress bar's epoch line, the History and any CSV logger after it.
    """

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = quantizer

    def on_epoch_begin(self, epoch, logs=None):
        """Start counting code usage afresh."""
        count = self.quantizer.usage_count
        count.assign(ops.zeros(count.shape, count.dtype))

    def on_epoch_end(self, epoch, logs=None):
        """Add this epoch's usage and perplexity to the logs."""
        usage, perplexity = usage_and_perplexity(
            ops.convert_to_numpy(self.quantizer.usage_count)
        )
        if logs is not None:
            logs["codebook_usage"] = usage
            logs["perplexity"] = perplexity
