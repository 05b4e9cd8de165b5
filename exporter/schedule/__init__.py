"""The schedule domain: cron and calendar-event expressions, threshold schedules and jobs.

Pure code with no I/O: given a schedule, a grace and the evidence of runs, it says when the
next start and finish deadlines are and whether a job is on time.
"""
