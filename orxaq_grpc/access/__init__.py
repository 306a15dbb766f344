"""Who may call what, and how often: credentials, roles and per-lane rates, without transport."""
