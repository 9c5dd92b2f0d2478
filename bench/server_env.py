"""The environment the bench scripts run the product in: production shape (DEBUG off, a real Daraja
environment with dummy credentials), but plain HTTP on localhost, so no HTTPS redirect or
secure-only cookies; and the development shape their seeding runs in."""


def production_env(database_url: str, *, log_level: str = "WARNING") -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DEBUG": "False",
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "MPESA_ENVIRONMENT": "sandbox",
        "MPESA_CONSUMER_KEY": "bench-key",
        "MPESA_CONSUMER_SECRET": "bench-secret",
        "MPESA_CALLBACK_BASE_URL": "https://bench.invalid",
        "SECURE_SSL_REDIRECT": "False",
        "SESSION_COOKIE_SECURE": "False",
        "CSRF_COOKIE_SECURE": "False",
        "SECURE_HSTS_SECONDS": "0",
        "LOG_LEVEL": log_level,
    }


def seed_env(server_env: dict[str, str]) -> dict[str, str]:
    """seed_demo and the simulator run only with DEBUG on."""
    return {**server_env, "DEBUG": "True", "MPESA_ENVIRONMENT": "simulator"}
