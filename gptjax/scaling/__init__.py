"""Scaling-law research: run a sweep of models, fit the laws its results follow, report them.

  observations.py  the runs: rows of a results file, and their N, D, C and loss as arrays
  lbfgs.py         L-BFGS from many starting points at once (Approach 3's grid and bootstrap)
  laws.py          Kaplan et al.'s power laws, Chinchilla's Approaches 2 and 3; fit any by name
  uncertainty.py   bootstrap confidence intervals and the hold-out test
  formatting.py    a fit or a hold-out test as a table or as JSON
  report.py        a sweep's plots and report.md
  sweep.py         running a sweep (python -m gptjax.sweep)
  cluster.py       a sweep's runs as SLURM jobs through submitit (--launcher submitit)
  __main__.py      python -m gptjax.scaling fit|report|holdout

Each module imports only ones listed above it, and report.py (matplotlib) is imported only by the
command line.
"""
