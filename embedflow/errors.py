"""Errors a user can act on: the rule scripts print them without a traceback."""


class UserError(Exception):
    """Something the user can fix: bad input, bad config, a missing device."""


class InputError(UserError):
    """The chunks file (or another input file) is malformed."""


class ConfigError(UserError):
    """The configuration asks for something that cannot be done."""
