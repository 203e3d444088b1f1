"""The one base class for errors whose message is written for a person.

Every domain error (a dataset that cannot train, a model that cannot be built, a checkpoint that
cannot be read, a setting out of range, a request for something the server does not offer)
derives from `UserError`. The CLI, the job runner and the app catch only `UserError` and show its
message as advice; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Something the user can fix; the message says what."""


class MissingExtra(UserError):
    """A feature whose optional packages (requirements-extras.txt) are not installed."""

    def __init__(self, feature: str, package: str):
        super().__init__(f"{feature} needs the optional package '{package}', which is not installed: "
                         "pip install -r requirements-extras.txt")
