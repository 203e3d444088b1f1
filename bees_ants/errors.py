"""The one base class for errors whose message is written for a person.

Every domain error (a dataset that cannot train, a model that cannot be built, a checkpoint that
cannot be read, a setting out of range, a request for something the server does not offer)
derives from `UserError`. The CLI, the job runner and the app catch only `UserError` and show its
message as advice; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Something the user can fix; the message says what."""
