"""api_gateway: the REST + JSON surface over the gRPC services."""
