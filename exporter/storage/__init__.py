"""Storage health shared by the ``zfs``, ``smartctl`` and ``truenas`` kinds.

Every backend turns what it reads into the same frozen models (:mod:`.models`:
:class:`~.models.DatasetInfo`, :class:`~.models.PoolInfo`, :class:`~.models.SmartDevice`) and
renders them with :mod:`.render`, so the metric names and labels are identical whichever
backend produced them. The parsers of the local command line tools live in :mod:`.zfs`
(``zfs list``, ``zpool status``) and :mod:`.smartctl` (``smartctl --json``); they are pure
functions of the command output (plus ``now`` / a time zone where the output needs it).
:mod:`.evidence` resolves job evidence from the models; :mod:`.config` reads the
``datasets:`` filter; :mod:`.selftest_pins` keeps each SMART self-test's time, once
estimated, in the kind's memory across polls and restarts.
"""
