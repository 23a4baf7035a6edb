"""The shipped models measured as they serve (evaluate), and the measurements written as a report (report)."""
