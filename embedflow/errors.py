"""Errors a user can act on: the rule scripts print them without a traceback."""


class UserError(Exception):
    """Something the user can fix: bad input, bad config, a missing device."""


class InputError(UserError):
    """The chunks file (or another input file) is malformed."""


class ConfigError(UserError):
    """The configuration asks for something that cannot be done."""


class TextRefused(UserError):
    """A text that a backend refuses to encode (an API's 400 for it alone): ``position`` is its
    index in the ``encode`` call and ``text`` the text as given, which the caller turns into a
    chunk id."""

    def __init__(self, message: str, position: int, text: str | None = None):
        super().__init__(message)
        self.position, self.text = position, text
