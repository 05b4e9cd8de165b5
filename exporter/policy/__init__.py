"""Policy drift: what the strategy promises, checked against reality on each poll.

The ``policy:`` section (:mod:`exporter.policy.config`) declares the promises; each poll of
the source a policy concerns checks them (:mod:`exporter.policy.checks`) into
``backup_policy_ok`` and ``backup_policy_drift_info`` (:mod:`exporter.policy.render`).
"""
