"""The one base class of the errors a user can cause and fix: a bad option, a missing or odd file,
an output path that would destroy something. Every command prints them as one line,
`error: <what was wrong and what to do>`, and exits with status 2; anything else is a bug and
shows its traceback (see cli.run_command)."""


class UserError(ValueError):
    """Something the user gave cannot be used; the message names it and says what to do."""
