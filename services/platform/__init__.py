"""The platform adapter: takes orders pushed by marketplace platforms and reports their
outcomes back. Its own service because it holds other parties' secrets and talks HTTP to
outside systems: their failures and credentials stay out of the orders service."""
