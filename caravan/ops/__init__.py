"""Operations tooling: consumer-group replay, dead letters, and the record of what was done."""
