"""Diffusion-model emulators of 2D cosmological density fields. The calls a notebook makes
(cosmodiff.api: train, load, sample, evaluate, posterior) and the training settings (TrainConfig,
cosmodiff.config) are at the top level, imported on first use
so that the command-line modules start without them."""

__all__ = ["Run", "TrainConfig", "evaluate", "load", "posterior", "sample", "train"]


def __getattr__(name):
    if name == "TrainConfig":
        from cosmodiff import config

        return config.train_config_type()
    if name in __all__:
        from cosmodiff import api

        return getattr(api, name)
    raise AttributeError(f"module 'cosmodiff' has no attribute '{name}'")
