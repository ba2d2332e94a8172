"""Dataset wrappers shared by the loop tests."""


class InterruptAt:
    """Wraps a dataset and raises ``KeyboardInterrupt`` (from code, not a signal) when batch
    index ``at`` is drawn."""

    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def train_batch(self, step):
        if step == self.at:
            raise KeyboardInterrupt
        return self.inner.train_batch(step)

    def eval_data(self):
        return self.inner.eval_data()
