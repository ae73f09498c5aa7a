"""The job subsystem: state machine (services), processing loop, runners, typed events, downloads, API."""
