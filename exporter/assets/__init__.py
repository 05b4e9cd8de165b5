"""Assets: what the operator protects, judged across the sources and jobs that hold its copies."""
