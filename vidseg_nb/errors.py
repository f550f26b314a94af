"""One error base class for every user-facing mistake: the CLI and the app catch :class:`VidSegError`.

Each subclass also derives from the built-in type it replaced (``ValueError`` / ``RuntimeError``), so
existing ``except ValueError`` code keeps working. Messages say what was wrong and what to do.
"""

from __future__ import annotations


class VidSegError(Exception):
    """Base of every error vidseg_nb raises for bad input, settings, models or data sets."""


class ConfigError(VidSegError, ValueError):
    """A hyper-parameter outside its valid range; the message says which and what is allowed."""


class VideoError(VidSegError, ValueError):
    """A problem with a clip handed in by a user; the message names the input, the problem and the fix."""


class BackboneLoadError(VidSegError, RuntimeError):
    """The model could not be loaded; the message names the source and how to point at a local copy."""


class DatasetError(VidSegError, ValueError):
    """A dataset folder that is missing, incomplete or laid out differently from what the reader expects."""


__all__ = ["BackboneLoadError", "ConfigError", "DatasetError", "VidSegError", "VideoError"]
