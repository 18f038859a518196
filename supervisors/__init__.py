"""Process supervision for pynenc runners: slot table, systemd integration, daemon."""
