"""Topic Feature Store, the shared base: settings, data contracts, Redis keys, table layouts and the Feast glue.

It imports no stage (``offline_jobs``, ``serving``, ``stream``); the CLI that joins them is :mod:`topicfs_app.cli`.
"""

__version__ = "0.1.0"
