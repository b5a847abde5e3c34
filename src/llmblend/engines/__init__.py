"""Where batch jobs run: locally in this process (the default), or on a Ray cluster.

:mod:`llmblend.engines.recipe` says how a job's ranker is built, so that each worker can build the
same one; :mod:`llmblend.engines.shards` cuts a job into fixed shards, keeps each finished one in
its own file and merges them in input order; :mod:`llmblend.engines.ray_rank` ranks the shards on
Ray Data. The local engine is :mod:`llmblend.rank.rank_file`. Nothing here imports Ray until a
Ray job runs.
"""
