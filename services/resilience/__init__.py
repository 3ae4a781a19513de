"""The pipeline's policies and the state they keep: retries, circuit breakers, host limits, the cache."""
