"""The errors that mean "the user's input or files are wrong": the CLI prints them as one clear
line instead of a traceback. Anything else is a bug and keeps its traceback.

Every user-facing error class is defined here, and this module imports nothing from attnmt, so
that a command can catch them without importing what raises them (torch, the training stack).
"""


class ConfigError(ValueError):
    """A configuration that cannot be used, with a message that says which key and why."""


class CorpusError(ValueError):
    """A corpus that cannot be read as parallel text; the message names the file (and line)."""


class Multi30kError(CorpusError):
    """A Multi30k file that is missing, damaged or not what the public dataset holds."""


class DownloadError(OSError):
    """A download that failed; the message says which URL and what to do offline."""


class CheckpointError(RuntimeError):
    """A model directory or checkpoint file that cannot be used; the message names the file."""


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


class AlignmentError(ValueError):
    """Alignments that cannot be used: an unreadable link, a gold file that does not fit the text."""


class NoAttentionError(AlignmentError):
    """The model has no attention (``model.attention: none``): nothing to plot or align."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, CorpusError, CheckpointError, TrainingError, AlignmentError, OSError
)
