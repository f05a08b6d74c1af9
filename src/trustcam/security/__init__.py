"""Who may do what: users, passwords, MFA, sessions, API tokens, roles and the hash-chained audit log."""
