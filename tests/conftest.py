pytest_plugins = ["tests.redis_servers"]
