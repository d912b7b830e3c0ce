"""The composition root: the ``topicfs`` command (:mod:`topicfs_app.cli`) and the end-to-end demo
(:mod:`topicfs_app.demo`). The only package that imports every stage; nothing imports it.

Layers, each importing only the ones below it (tests/test_architecture.py checks this):

- ``topicfs_app``: the CLI and the demo;
- ``stream`` (the Kafka/Faust worker; topic assignment on arrival through :mod:`offline_jobs.inference`),
  ``offline_jobs`` (topic learning, MRLM, ranker training, Table II) and ``serving`` (candidates, the API,
  ranking, online feature assembly, the topic browser);
- ``topicfs``: the shared base — settings, data contracts, Redis keys, table layouts, the Feast glue.
"""
