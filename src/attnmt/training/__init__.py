"""Training: ``train(config, model_dir)``.

    loop.py         the training loop, readable top to bottom; one optimizer step (``Trainee.step``)
    state.py        the trainer state and its file, for an exact ``--resume``
    prepare.py      corpora → tokenizers → token store; the checks of a run's model directory
    word_alignment.py  eflomal alignments of the training data, for guided alignment
    distributed.py  several processes under torchrun (DDP)
    metrics.py      metrics.jsonl and TensorBoard
    progress.py     the progress bar
"""

from attnmt.errors import TrainingError

__all__ = ["TrainResult", "TrainingError", "train"]


def __getattr__(name: str):
    """``train`` and ``TrainResult`` are imported on first use: importing a part of training
    (``attnmt.training.progress``) does not import the whole loop."""
    if name in ("train", "TrainResult"):
        from attnmt.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'attnmt.training' has no attribute {name!r}")
