"""In-process fakes of the backed-up systems, for tests and the simulated homelab demo."""
