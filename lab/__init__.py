"""The lab's shared machinery: the one rollout loop every runner drives, and results bookkeeping."""


class UsageError(ValueError):
    """A mistake in what the user asked for. Runners print its one-line message and exit with code 2."""
