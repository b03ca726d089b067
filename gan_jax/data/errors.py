"""The one exception the data layer raises for problems a user must fix."""


class DatasetError(RuntimeError):
  """A dataset cannot be built or read: missing, corrupt or misconfigured.

  The message says what is wrong and what to do about it.
  """
