"""Downstream of the feature store: candidate generation from the topic queues and topic-aware rankers."""
