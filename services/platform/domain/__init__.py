"""Pure rules of the platform adapter: signatures, timestamps, mapping, retry delays."""
