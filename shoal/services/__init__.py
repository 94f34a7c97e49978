"""Services nodes share: replay server (parameter and inference servers to come)."""
