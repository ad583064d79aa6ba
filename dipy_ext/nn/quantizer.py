"""Vector quantizer with an EMA codebook and dead-code restart.

The codebook is not trained by gradients: each training call moves every code
towards the mean of the encoder vectors assigned to it (exponential moving
averages of counts and sums, van den Oord et al. 2017), and replaces codes
whose average count has fallen below a threshold by encoder vectors of the
current batch (dead-code restart), the standard cure for codebook collapse.
Starting the average counts at zero makes the first batch a data-driven
initialisation. All of this is variable assignment inside ``call``, so it runs
under ``model.fit`` on any Keras backend.

The layer must run in float32 (distances between vectors); build it with
``dtype="float32"`` even under a mixed-precision policy.
"""

from dipy_ext.nn._backend import keras, layers, ops


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


class VectorQuantizer(layers.Layer):
    """Nearest-code quantization of channels-last vectors.

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

    Notes
    -----
    A call returns the quantized tensor (with a straight-through gradient to
    the input) and the code index of each vector.
    """

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
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold
        self.epsilon = epsilon
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        k, d = self.num_embeddings, self.embedding_dim
        stat = {"trainable": False, "aggregation": "mean"}
        self.embeddings = self.add_weight(
            shape=(k, d), initializer="random_normal", name="embeddings", **stat
        )
        self.ema_count = self.add_weight(
            shape=(k,), initializer="zeros", name="ema_count", **stat
        )
        self.ema_sum = self.add_weight(
            shape=(k, d), initializer="zeros", name="ema_sum", **stat
        )
        # Codes used since the last reset (training only): the usage callback
        # resets it at each epoch start and reads it at each epoch end.
        self.usage_count = self.add_weight(
            shape=(k,), initializer="zeros", name="usage_count", **stat
        )

    def nearest(self, flat):
        """Index of the nearest code for each row of ``flat`` (N, D)."""
        e = ops.convert_to_tensor(self.embeddings)
        dist = (
            ops.sum(flat**2, axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(e))
            + ops.sum(e**2, axis=1)[None, :]
        )
        return ops.argmin(dist, axis=1)

    def lookup(self, indices):
        """Code vectors for an integer index array (any shape)."""
        return ops.take(self.embeddings, indices, axis=0)

    def call(self, z, training=False):
        z = ops.cast(z, "float32")
        flat = ops.reshape(z, (-1, self.embedding_dim))
        indices = self.nearest(flat)
        quantized = ops.reshape(self.lookup(indices), ops.shape(z))
        if training:
            self._update_codebook(flat, indices)
        commitment = ops.mean((ops.stop_gradient(quantized) - z) ** 2)
        self.add_loss(self.commitment_cost * commitment)
        quantized = z + ops.stop_gradient(quantized - z)  # straight-through
        return quantized, ops.reshape(indices, ops.shape(z)[:-1])

    def _update_codebook(self, flat, indices):
        onehot = ops.one_hot(indices, self.num_embeddings, dtype="float32")
        count = _sum_across_replicas(ops.sum(onehot, axis=0))
        total = _sum_across_replicas(ops.matmul(ops.transpose(onehot), flat))
        self.usage_count.assign_add(count)

        ema_count = self.decay * self.ema_count + (1 - self.decay) * count
        ema_sum = self.decay * self.ema_sum + (1 - self.decay) * total
        n = ops.sum(ema_count)
        smoothed = (
            (ema_count + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        )
        embeddings = ema_sum / smoothed[:, None]

        # Dead-code restart: codes rarely chosen jump onto random batch vectors.
        # (Each replica samples its own batch; with tf.distribute the
        # "mean" aggregation of these variables averages the restarts.)
        dead = ema_count < self.dead_code_threshold
        pick = keras.random.randint(
            (self.num_embeddings,), 0, ops.shape(flat)[0], seed=self.seed_generator
        )
        sampled = ops.take(flat, pick, axis=0)
        dead_col = dead[:, None]
        threshold = self.dead_code_threshold
        self.embeddings.assign(ops.where(dead_col, sampled, embeddings))
        self.ema_sum.assign(ops.where(dead_col, sampled * threshold, ema_sum))
        self.ema_count.assign(ops.where(dead, threshold, ema_count))

    def compute_output_shape(self, input_shape):
        return input_shape, input_shape[:-1]

    def get_config(self):
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "commitment_cost": self.commitment_cost,
            "decay": self.decay,
            "dead_code_threshold": self.dead_code_threshold,
            "epsilon": self.epsilon,
        }


def usage_and_perplexity(counts):
    """Fraction of codes used, and perplexity, from per-code counts (numpy).

    Perplexity is ``exp(entropy)`` of the code distribution: the effective
    number of codes in use (it grows with the number of vectors counted).
    """
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts / total
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return float((counts > 0).mean()), float(np.exp(entropy))


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
