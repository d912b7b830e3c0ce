"""Offline jobs: topic learning (:mod:`offline_jobs.pipeline`, MTL III-A) and Table I, MRLM (:mod:`offline_jobs.mrlm_job`),
ranker training (:mod:`offline_jobs.ranker_training`) and Table II (:mod:`offline_jobs.table2`); their commands are
``topicfs topics`` and ``topicfs offline``. The stream imports only :mod:`offline_jobs.inference` (topics for videos
published after the job ran).
"""
