"""Writers at the edge of the pipeline: files in the run's output folder and the console.

Every writer takes judged records (`CaseResult`, `GateResult`, the `Tally`) and never decides
anything: what is a match, a diff or a pass was settled by the pure core.
"""
