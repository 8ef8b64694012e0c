"""The toolkit's one error family: something the person running it can fix.

Every error class of the package derives from :class:`UserError`, and its message is one line that says which file,
what is wrong and what to do. The command line prints that line and exits with 2; anything else is a bug.
"""


class UserError(Exception):
    """Bad input, a missing file or package, a refused request: the message says what to change."""
