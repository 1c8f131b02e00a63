"""The evaluation harness: reference policies, the oracle, metrics, the runner and the report.

Every policy (the default one, the published references, the oracle) runs against the same simulated
host and the same demand traces, stepped on virtual time, so that a number in the report is a fair
comparison and not an anecdote. See ``docs/evaluation.md`` for the latest results.
"""
