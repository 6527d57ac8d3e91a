"""Scoring and reporting: the WER / CER `evaluate` metric module (`asr_error_rates`, self-contained so it can be
published as a Hub metric), per-system scores and the paired bootstrap (`metrics`), and the run's report with its
tables and plots (`report`).

Owns how results are measured and shown; imports nothing from avalign.training but itself.
"""
