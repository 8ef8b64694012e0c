"""The export layer's error: the request was refused or failed its checks, and nothing was written."""

from ultralbm_edge.runtime.errors import UserError


class ExportError(UserError, ValueError):
    """The export was refused or failed its checks; nothing was written at the output path."""
