"""Tables and the HTTP client of the platforms' APIs."""
