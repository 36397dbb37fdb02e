"""The error the data readers raise (fields, snapshots, shards): its own module so that readers of
different formats can share it without importing each other."""


class FieldError(ValueError):
    """Bad field data: the message is one sentence naming the file and the problem."""
