"""The operator console: one live dashboard in the admin and confirmed, reasoned actions."""
