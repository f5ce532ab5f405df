"""What several test files train with: a tiny model's settings, and a Ctrl-C at a chosen epoch."""

import keras

# A model of a few thousand weights on 32 px synthetic pets: an epoch takes a second or two.
TINY = dict(image_size=32, alpha=0.35, decoder_filters=(16, 16, 16, 16),
            synthetic_train_examples=16, synthetic_val_examples=8, batch_size=8, seed=4)


class StopAtEpoch(keras.callbacks.Callback):
    """Ctrl-C as the run reaches epoch `epoch` (1-based): every earlier epoch is saved."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt
