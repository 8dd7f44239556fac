"""Training: ``train(config, model_dir)``.

    loop.py         the training loop, readable top to bottom; one optimizer step (``Trainee.step``)
    state.py        the trainer state and its file, for an exact ``--resume``
    prepare.py      corpora → tokenizers → token ids; the checks of a run's model directory
    distributed.py  several processes under torchrun (DDP)
    metrics.py      metrics.jsonl and TensorBoard
    progress.py     the progress bar
"""

from attnmt.errors import TrainingError
from attnmt.training.loop import TrainResult, train

__all__ = ["TrainResult", "TrainingError", "train"]
