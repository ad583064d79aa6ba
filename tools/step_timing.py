"""A Keras callback timing training steps, shared by the benchmark scripts."""

import time


def step_timer():
    """A Keras callback recording the duration of every training step
    (``.times``, seconds); Keras is imported only when one is made."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()
