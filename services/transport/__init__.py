"""How a request leaves the process: connection protocol, pool, and the glue to httpx."""
