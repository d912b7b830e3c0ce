"""Streaming updater (MTL III-B-1): Faust workers keep per-video / per-topic exposures, clicks and CTR,
the τ1/τ2-pruned topic queues with their fresh share, and users' recent clicks live from Kafka.

Follow one message forward: :mod:`stream.records` (schemas) → :mod:`stream.logic` (pure validation,
counting, pruning, queue building) → :mod:`stream.state` (Redis: one transaction per batch, offsets
included) → :mod:`stream.app` (the Faust agents and timers: thin glue) → :mod:`stream.sinks` (Feast push).
:mod:`stream.broker`, :mod:`stream.replay`, :mod:`stream.metrics`, :mod:`stream.cli` run it.
"""
