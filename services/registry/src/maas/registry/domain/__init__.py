"""Domain services: the registry's rules, free of gRPC and of SQL dialects."""
