"""Supervisor: launching workers, the isolation layers around them, and the watchdog."""
