"""The errors that mean "the user's input or files are wrong": the CLI prints them as one clear
line instead of a traceback. Anything else is a bug and keeps its traceback."""

from attnmt.alignment import AlignmentError
from attnmt.checkpoint import CheckpointError
from attnmt.config import ConfigError
from attnmt.data.corpus import CorpusError
from attnmt.train import TrainingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, CorpusError, CheckpointError, TrainingError, AlignmentError, OSError
)
