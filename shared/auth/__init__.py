"""Who may call Caravan's HTTP APIs (bearer tokens with scopes) and what admins did (the audit
trail). Both live in the ``auth`` schema, the one schema every service reads (tokens) and
writes (audit) besides its own; see docs/security.md."""
