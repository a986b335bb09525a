"""The Redis client factory (redis-py asyncio): a single Redis, or a Redis Cluster
reached through the address of any of its nodes.

The URL carries the credentials and the transport as redis-py reads them:
``redis://:password@host:port/db``, ``redis://user:password@host:port/db`` (ACL), and
``rediss://`` for TLS (its query may add ``ssl_cert_reqs=none|optional|required``).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from core.settings import RedisSettings

RedisClient: TypeAlias = Redis | RedisCluster


def _tls_options(settings: RedisSettings) -> dict[str, Any]:
    """The TLS options the settings add to a ``rediss://`` URL's."""
    options: dict[str, Any] = {}
    if settings.redis_ssl_ca_certs:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    if settings.redis_ssl_certfile:
        options["ssl_certfile"] = settings.redis_ssl_certfile
    if settings.redis_ssl_keyfile:
        options["ssl_keyfile"] = settings.redis_ssl_keyfile
    return options


def create_redis(settings: RedisSettings) -> RedisClient:
    options = _tls_options(settings) if settings.redis_url.startswith("rediss://") else {}
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            decode_responses=False,
            socket_connect_timeout=2.0,
            socket_timeout=10.0,
            **options,
        )
    return Redis.from_url(
        settings.redis_url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=10.0,
        health_check_interval=15,
        retry_on_timeout=True,
        **options,
    )
